/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the configuration parser: any bytes in, a Config or errors out, no leaks. */
#include <stddef.h>
#include <stdint.h>

#include "collector/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Config *c = NULL;
        char **errors = NULL;
        int r;

        r = config_parse("fuzz.json", (const char *) data, size, &c, &errors);
        /* The contract: success gives a config and no errors; failure the reverse. */
        if (r == 0 && (!c || errors))
                __builtin_trap();
        if (r == -EINVAL && (c || !errors || !errors[0]))
                __builtin_trap();
        config_free(c);
        strv_free(errors);
        return 0;
}
