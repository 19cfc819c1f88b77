/* SPDX-License-Identifier: MIT */
/* libFuzzer target for decimal_format(): any double, as 8 raw bytes or as the number a text
 * parses to, gives the text of the printf loop it replaces, which reads back as that double. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/decimal.h"
#include "../lib/decimal-reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(double v) {
        char got[DECIMAL_BUF_SIZE], want[64];
        size_t n = decimal_format(v, got);

        reference_format(v, want, sizeof(want));
        if (n != strlen(got) || n >= DECIMAL_BUF_SIZE || strcmp(got, want) != 0)
                abort();
        if (isfinite(v)) {
                double back = strtod(got, NULL);

                if (memcmp(&back, &v, sizeof(v)) != 0)
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char text[64];
        double v;

        if (size == sizeof(v)) {
                memcpy(&v, data, sizeof(v));
                check(v);
        }
        /* As text: the sensor-like values ("22.3", "-0.005", "1013.25") a frame carries. */
        if (size < sizeof(text)) {
                memcpy(text, data, size);
                text[size] = 0;
                v = strtod(text, NULL);
                check(v);
                check(v * 1.8 + 32);
        }
        return 0;
}
