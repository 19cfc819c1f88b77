/* SPDX-License-Identifier: MIT */
/* libFuzzer target: JSON serial lines through frame_parse_line() and the LineBuffer (pull and push). */
#define FORMAT FRAME_FORMAT_JSON
#include "fuzz-frame-line.h"
