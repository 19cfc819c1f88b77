/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the status formats: any JSON an answer could hold (the client reads it
 * from a socket) renders as text, Prometheus text and OpenMetrics without a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "collector/status-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        cJSON *answer = cJSON_ParseWithLength((const char *) data, size);
        FILE *f;

        if (!answer)
                return 0;
        f = fopen("/dev/null", "we");
        if (f) {
                (void) status_health(answer);
                (void) status_format_text(answer, 1700000000000, f);
                (void) status_format_prometheus(answer, f);
                (void) status_format_openmetrics(answer, f);
                fclose(f);
        }
        cJSON_Delete(answer);
        return 0;
}
