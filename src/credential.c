/* SPDX-License-Identifier: MIT */
/* Secrets read from systemd's credentials directory or a file, and wiped after use. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collector/credential.h"
#include "collector/macro.h"

/* A password file is one line; anything longer than MQTT's limit is not a password. */
#define PASSWORD_MAX 65535
#define CREDENTIAL_DEFAULT_NAME "mqtt-password"

void erase_and_free(char *p, size_t size) {
        if (!p)
                return;
        explicit_bzero(p, size);
        free(p);
}

int credential_read_password(const char *username, const char *password_file, char **ret, char **ret_path) {
        _cleanup_free_ char *cred = NULL;
        const char *dir = getenv("CREDENTIALS_DIRECTORY"), *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        char *buf = NULL, *password;
        size_t len = 0;
        int r;

        if (!username) {
                *ret = NULL;
                return 0;
        }
        if (dir && *dir) {
                const char *name = CREDENTIAL_DEFAULT_NAME;

                if (password_file) {
                        const char *slash = strrchr(password_file, '/');
                        name = slash ? slash + 1 : password_file;
                }
                if (asprintf(&cred, "%s/%s", dir, name) < 0) {
                        cred = NULL;
                        return -ENOMEM;
                }
                if (access(cred, F_OK) == 0)
                        path = cred;
        }
        if (!path)
                path = password_file;
        if (!path) {
                *ret = NULL;
                return 0;
        }

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                goto fail;
        buf = malloc(PASSWORD_MAX + 2);
        if (!buf)
                goto fail;
        for (;;) {
                ssize_t k = read(fd, buf + len, PASSWORD_MAX + 1 - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        goto fail;
                }
                if (k == 0)
                        break;
                len += (size_t) k;
                if (len > PASSWORD_MAX) {
                        errno = EFBIG;
                        goto fail;
                }
        }
        buf[len] = 0;
        /* One line: the password ends at the first newline. Whatever follows is not kept. */
        password = strndup(buf, strcspn(buf, "\r\n"));
        erase_and_free(buf, PASSWORD_MAX + 2);
        if (!password)
                return -ENOMEM;
        *ret = password;
        return 0;

fail:
        r = negative_errno();
        erase_and_free(buf, PASSWORD_MAX + 2);
        *ret_path = strdup(path);
        return r;
}

