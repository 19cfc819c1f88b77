/* SPDX-License-Identifier: MIT */
/* What every fuzz target asserts of a parse result: a valid frame or a known reject reason. */
#pragma once

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collector/frame.h"

/* What every parse must guarantee: a valid frame or a known reason. */
static inline void fuzz_check_frame(int r, const Frame *f, FrameReject reason) {
        if (r == -EBADMSG) {
                if (!frame_reject_to_string(reason))
                        abort();
                return;
        }
        if (r == -ENOMEM)
                return;
        if (r != 0)
                abort();
        if (!frame_id_valid(f->sensor, strlen(f->sensor)))
                abort();
        if (f->n_metrics < 1 || f->n_metrics > FRAME_METRICS_MAX)
                abort();
        if (f->has_ts && (f->ts_ms < INT64_C(946684800000) || f->ts_ms >= (INT64_C(1) << 53)))
                abort();
        for (size_t i = 0; i < f->n_metrics; i++) {
                if (!frame_id_valid(f->metrics[i].name, strlen(f->metrics[i].name)) || !isfinite(f->metrics[i].value))
                        abort();
                for (size_t j = 0; j < i; j++)
                        if (streq(f->metrics[i].name, f->metrics[j].name))
                                abort();
        }
}

