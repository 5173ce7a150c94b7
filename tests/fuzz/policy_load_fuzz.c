/* libFuzzer target for loading a policy (sc_policy_check_file: run the chunk in
 * the sandbox under its budget, validate keys, types and phases, try route and
 * on_kontext_error on a sample request): the checks every reload runs on bytes
 * an operator wrote. The input goes through a memfd so the public API reads it
 * as a file. Any input must be accepted or refused with an error that names
 * the file; nothing may crash or leak. Build with -DSC_FUZZ=ON (clang). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"
#include "lua/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sc_config_t cfg;
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        sc_config_defaults(&cfg);
        fd = memfd_create("policy.lua", 0);
        if (fd < 0)
            __builtin_trap();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        __builtin_trap();
    char err[2048] = "";
    if (sc_policy_check_file(&cfg, path, err, sizeof err) != 0 && !strstr(err, path))
        __builtin_trap(); /* a refusal always says which file */
    return 0;
}
