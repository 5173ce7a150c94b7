/* Helpers shared by the metrics tests: the composite_metrics.json.corrupt-*
 * files that sc_metrics_init leaves when it moves a bad file aside. */
#ifndef SCENECOMP_TESTS_METRICS_FILES_H
#define SCENECOMP_TESTS_METRICS_FILES_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Number of composite_metrics.json.corrupt-* files in dir; the last name seen
 * goes to last (may be NULL). */
static int corrupt_files_in(const char *dir, char *last, size_t lastlen)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "composite_metrics.json.corrupt-", 31) == 0) {
            n++;
            if (last)
                snprintf(last, lastlen, "%s/%s", dir, e->d_name);
        }
    }
    if (d)
        closedir(d);
    return n;
}

static void remove_corrupt_files_in(const char *dir)
{
    char p[512];
    while (corrupt_files_in(dir, p, sizeof p) > 0)
        unlink(p);
}

#endif
