/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the configuration parser: any bytes in, a Config or errors out, and the
 * syntax check agreeing with cJSON about what is JSON. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The whole loader, to reach its static syntax check as well as config_parse(). */
#include "../../src/config.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The syntax check runs before cJSON and reports the error; it must accept what cJSON accepts,
 * except what it rejects on purpose, and reject what cJSON rejects. */
static void check_syntax_agrees(const uint8_t *data, size_t size) {
        _cleanup_(cjson_deletep) cJSON *root = NULL;
        _cleanup_free_ char *text = NULL;
        char reason[192];
        const char *end;
        size_t pos;
        bool rejected;

        if (memchr(data, 0, size))
                return;
        text = strndup((const char *) data, size);
        if (!text)
                return;
        rejected = scan_locate(text, &pos, reason, sizeof(reason));
        root = cJSON_ParseWithLengthOpts(text, size + 1, &end, true);
        if (!rejected && !root) {
                fprintf(stderr, "cJSON rejects what the syntax check accepts\n");
                __builtin_trap();
        }
        if (rejected && root && !strstr(reason, "not closed on its line") && !strstr(reason, "\\u") &&
            !strstr(reason, "byte 0x")) {
                fprintf(stderr, "the syntax check rejects what cJSON accepts: %s\n", reason);
                __builtin_trap();
        }
        if (rejected && pos > size)
                __builtin_trap();
}

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

        check_syntax_agrees(data, size);
        return 0;
}
