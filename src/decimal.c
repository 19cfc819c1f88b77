/* SPDX-License-Identifier: MIT */
/* Numbers as text without printf for the common cases (see collector/decimal.h). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/decimal.h"
#include "collector/macro.h"

/* Powers of ten that a double holds exactly (every one up to 1e22 does). */
static const double pow10_exact[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 };

/* Digits of u, most significant first, into d (at least 20 bytes). Returns how many. Two
 * digits per division: a millisecond timestamp has 13, and an export prints two per row. */
static size_t digits_u64(uint64_t u, char *d) {
        static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                    "8081828384858687888990919293949596979899";
        char tmp[20];
        size_t i = sizeof(tmp);

        while (u >= 100) {
                unsigned p = (unsigned) (u % 100) * 2;

                u /= 100;
                tmp[--i] = pairs[p + 1];
                tmp[--i] = pairs[p];
        }
        if (u >= 10) {
                tmp[--i] = pairs[u * 2 + 1];
                tmp[--i] = pairs[u * 2];
        } else
                tmp[--i] = (char) ('0' + u);
        memcpy(d, tmp + i, sizeof(tmp) - i);
        return sizeof(tmp) - i;
}

size_t decimal_format_int64(int64_t v, char *buf) {
        /* Negated as unsigned: INT64_MIN has no positive int64_t. */
        uint64_t u = v < 0 ? -(uint64_t) v : (uint64_t) v;
        size_t n = 0;

        if (v < 0)
                buf[n++] = '-';
        n += digits_u64(u, buf + n);
        buf[n] = 0;
        return n;
}

/* m / 10^k laid out as %g lays out a value of those digits: fixed notation unless the decimal
 * exponent is below -4 (it cannot reach 15 here: |m| < 10^15), trailing zeros of the fraction
 * dropped, the exponent with at least two digits. */
static size_t format_scaled(int64_t m, unsigned k, char *buf) {
        uint64_t u = m < 0 ? -(uint64_t) m : (uint64_t) m;
        char d[20];
        size_t n, len = 0;
        int exponent;

        while (k > 0 && u % 10 == 0) {
                u /= 10;
                k--;
        }
        n = digits_u64(u, d);
        exponent = (int) n - 1 - (int) k;
        if (m < 0)
                buf[len++] = '-';
        if (exponent < -4) {
                buf[len++] = d[0];
                if (n > 1) {
                        buf[len++] = '.';
                        memcpy(buf + len, d + 1, n - 1);
                        len += n - 1;
                }
                /* exponent is -5 to -9 here (k <= 9, u >= 1). */
                buf[len++] = 'e';
                buf[len++] = '-';
                buf[len++] = '0';
                buf[len++] = (char) ('0' - exponent);
        } else if (k == 0) {
                memcpy(buf + len, d, n);
                len += n;
        } else if (n > k) {
                memcpy(buf + len, d, n - k);
                len += n - k;
                buf[len++] = '.';
                memcpy(buf + len, d + n - k, k);
                len += k;
        } else {
                buf[len++] = '0';
                buf[len++] = '.';
                memset(buf + len, '0', k - n);
                len += k - n;
                memcpy(buf + len, d, n);
                len += n;
        }
        buf[len] = 0;
        return len;
}

size_t decimal_format(double v, char *buf) {
        if (!isfinite(v))
                return (size_t) snprintf(buf, DECIMAL_BUF_SIZE, "%s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        if (v == 0)
                return (size_t) snprintf(buf, DECIMAL_BUF_SIZE, "%s", signbit(v) ? "-0" : "0");

        /* The fewest decimals k such that m = round(v * 10^k) gives back v as m / 10^k. Both m
         * (|m| < 10^15 < 2^53) and 10^k are exact doubles and IEEE division rounds correctly, so
         * the test proves that the decimal m * 10^-k reads back as v. That decimal has at most
         * 15 significant digits and lies within half an ulp of v (2^-53 relative), far less
         * than half a step of 15 significant digits (5 * 10^-16 relative at least): %.15g of v
         * rounds to exactly these digits, which is why the text is the one printf gives. */
        for (unsigned k = 0; k < ELEMENTSOF(pow10_exact); k++) {
                double scaled = v * pow10_exact[k];
                int64_t m;

                if (!(fabs(scaled) < 1e15))
                        break;
                m = llround(scaled);
                if ((double) m / pow10_exact[k] == v)
                        return format_scaled(m, k, buf);
        }

        for (int precision = 15;; precision++) {
                int n = snprintf(buf, DECIMAL_BUF_SIZE, "%.*g", precision, v);

                if (precision == 17 || strtod(buf, NULL) == v)
                        return (size_t) n;
        }
}
