/* SPDX-License-Identifier: MIT */
/* Numbers as text, fast: the shortest decimal that reads back as the same double, and integers. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Room for every text decimal_format() writes, with its NUL ("-1.2345678901234567e-308"). */
#define DECIMAL_BUF_SIZE 32
/* Room for every text decimal_format_int64() writes, with its NUL ("-9223372036854775808"). */
#define DECIMAL_INT64_BUF_SIZE 21

/* Writes v into buf as the text that printf("%.15g") gives when strtod() reads that back as v,
 * else "%.16g" under the same condition, else "%.17g" (which always reads back): the text
 * `sensor-collector query` has always printed, so that exports stay byte for byte the same.
 * Not finite: "nan", "inf", "-inf"; negative zero: "-0". Values with at most 9 decimals and 15
 * significant digits (every sensor value in practice) take an integer path with no printf and
 * no strtod; the rest the printf loop. Does not depend on the locale for the fast path; the
 * fallback uses printf, which the program runs in the "C" locale. buf: at least
 * DECIMAL_BUF_SIZE bytes, NUL-terminated on return. Returns the length of the text. */
size_t decimal_format(double v, char *buf);

/* Writes v in decimal ("%" PRId64) into buf, at least DECIMAL_INT64_BUF_SIZE bytes, NUL-terminated.
 * Returns the length of the text. */
size_t decimal_format_int64(int64_t v, char *buf);
