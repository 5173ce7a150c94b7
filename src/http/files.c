/* GET /api/composites/{id}.{png|jpg} (the format table's extensions) and GET /api/scenes/{id}.png:
 * saved images. The name is checked (32 lowercase hex + a known extension) before any path is
 * built, so nothing a client sends reaches the filesystem unchecked. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ids.h"
#include "http/conn.h"
#include "image/format.h"

enum MHD_Result sc_http__serve_output(sc_http_conn_t *c, const char *subdir, const char *name)
{
    /* <id>.<ext> with ext exactly a saved extension of the format table;
     * scenes are saved as PNG only */
    size_t n = strlen(name);
    const sc_format_t *f =
        n > SC_ID_LEN + 1 && name[SC_ID_LEN] == '.' ? sc_format_by_ext(name + SC_ID_LEN + 1) : NULL;
    if (f && (strcmp(name + SC_ID_LEN + 1, f->ext) != 0 || (subdir && f->id != SC_FMT_PNG)))
        f = NULL;
    const char *ctype = f ? f->mime : NULL;
    if (!ctype || !sc_id_valid(name, SC_ID_LEN))
        return sc_http__send_error(c->mhd, 404, "not_found", "no such image");

    char path[2200];
    snprintf(path, sizeof path, "%s%s%s/%s", c->cfg->output_dir, subdir ? "/" : "",
             subdir ? subdir : "", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return sc_http__send_error(c->mhd, 404, "not_found", "no such image");
    struct stat stt;
    if (fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
        close(fd);
        return sc_http__send_error(c->mhd, 404, "not_found", "no such image");
    }
    /* MHD owns fd from here and closes it when the response is destroyed. */
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)stt.st_size, fd);
    if (!r) {
        close(fd);
        return sc_http__send_oom(c->mhd);
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL,
                            "public, max-age=31536000, immutable");
    return sc_http__deliver(c->mhd, 200, r);
}
