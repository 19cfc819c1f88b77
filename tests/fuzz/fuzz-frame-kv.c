/* SPDX-License-Identifier: MIT */
/* libFuzzer target: kv serial lines through frame_parse_line() and the LineBuffer. */
#define FORMAT FRAME_FORMAT_KV
#include "fuzz-frame-line.h"
