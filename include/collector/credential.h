/* SPDX-License-Identifier: MIT */
/* Secrets read from systemd's credentials directory or a file, and wiped after use. */
#pragma once

#include <stddef.h>

/* The MQTT password of username (NULL: no password is read): the file
 * $CREDENTIALS_DIRECTORY/<basename of password_file> (or "mqtt-password" when password_file is
 * NULL) when systemd passed credentials and that file exists, else password_file. The first
 * line is the password (at most 65535 bytes). Returns 0 with *ret (NULL when there is none; an
 * allocation of exactly the password and its NUL, for erase_and_free()), or -errno with *ret
 * untouched and *ret_path (owned by the caller) naming the file that failed. Every buffer that
 * held what was read is zeroed. */
int credential_read_password(const char *username, const char *password_file, char **ret, char **ret_path);

/* Zeroes all size bytes of a buffer that held a secret and frees it. Accepts NULL. */
void erase_and_free(char *p, size_t size);
