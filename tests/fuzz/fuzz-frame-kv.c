/* SPDX-License-Identifier: MIT */
/* libFuzzer target: kv serial lines through frame_parse_line() and the LineBuffer (pull and push). */
#define FORMAT FRAME_FORMAT_KV
#include "fuzz-frame-line.h"
