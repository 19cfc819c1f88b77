/* SPDX-License-Identifier: MIT */
/* The text `sensor-collector query` printed before decimal_format() existed: the reference the
 * unit test and the fuzz target hold decimal_format() to. Kept here, apart from decimal.c's own
 * fallback, so that the reference does not change with the code under test. */
#pragma once

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static inline void reference_format(double v, char *buf, size_t size) {
        if (!isfinite(v)) {
                snprintf(buf, size, "%s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
                return;
        }
        for (int precision = 15; precision <= 17; precision++) {
                snprintf(buf, size, "%.*g", precision, v);
                if (strtod(buf, NULL) == v)
                        return;
        }
}
