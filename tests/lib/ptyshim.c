/* SPDX-License-Identifier: MIT */
/* LD_PRELOAD shim, used only by the tests: lets libserialport open and configure a pty slave. */

/*
 * Why this exists: the integration tests feed the daemon through a socat pty pair, and a pty
 * is not quite a serial port:
 *
 * 1. libserialport 0.1.1 issues the modem-control ioctls TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC in
 *    sp_open() and whenever it applies a setting; a pty has no modem lines, the kernel answers
 *    ENOTTY and sp_open() fails. The shim answers exactly those four requests from a small
 *    per-descriptor table of emulated line states.
 * 2. The pty driver forces CS8 and clears PARENB on every termios change, and glibc's
 *    tcsetattr() then reports EINVAL because what it reads back differs (5..7 data bits, any
 *    parity with PARENB). The shim passes the settings on with CS8 and without PARENB, so that
 *    everything else (speed, stop bits, PARODD/CMSPAR, flow control, raw mode) really lands on
 *    the pty, and remembers the requested CSIZE and PARENB: tcgetattr() on that descriptor
 *    reports them back (libserialport reads the configuration before each change).
 * 3. When $SC_PTYSHIM_RECORD names a file, the last requested c_cflag and c_iflag and the
 *    emulated modem lines are written there after every change ("cflag=0NNN iflag=0NNN
 *    modem=0xNNN"), so that a test can check what the kernel cannot hold.
 *
 * All of this applies only to Unix98 pty slaves (character devices with a major number in
 * 136..143). Every other call, and these calls on any other descriptor, go to the real
 * functions unchanged. It is never installed and never linked into the daemon; testlib's
 * tl_daemon_start() puts it in LD_PRELOAD.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#define PTY_SLAVE_MAJOR_MIN 136
#define PTY_SLAVE_MAJOR_MAX 143
#define SHIM_FDS 4096

/* Lines a freshly opened port reports: the far end is "there" and ready (CTS, DSR, CD), our
 * own outputs DTR and RTS down, so that a test sees whether the daemon raises them. */
#define MODEM_DEFAULT (TIOCM_CTS | TIOCM_DSR | TIOCM_CD)
/* The c_cflag bits a pty cannot keep. */
#define PTY_LOST_CFLAG (CSIZE | PARENB)

typedef int (*ioctl_fn)(int fd, unsigned long request, ...);
typedef int (*tcgetattr_fn)(int fd, struct termios *t);
typedef int (*tcsetattr_fn)(int fd, int action, const struct termios *t);

/* Emulated state per descriptor, remembered with the device it belongs to so that a reused
 * descriptor number starts over. The daemon is single-threaded: no locking. */
typedef struct PtyState {
        dev_t rdev;               /* 0: never seen */
        int lines;                /* modem lines */
        bool have_cflag;
        tcflag_t cflag;           /* requested CSIZE and PARENB */
        struct termios requested; /* the last termios asked for, for the record */
} PtyState;

static PtyState state[SHIM_FDS];

static void *real(const char *name) {
        void *f = dlsym(RTLD_NEXT, name);

        if (!f)
                errno = ENOSYS;
        return f;
}

/* Our state for fd when it is a pty slave, else NULL. */
static PtyState *pty_state(int fd) {
        struct stat st;

        if (fd < 0 || fd >= SHIM_FDS || fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode))
                return NULL;
        if (major(st.st_rdev) < PTY_SLAVE_MAJOR_MIN || major(st.st_rdev) > PTY_SLAVE_MAJOR_MAX)
                return NULL;
        if (state[fd].rdev != st.st_rdev)
                state[fd] = (PtyState){ .rdev = st.st_rdev, .lines = MODEM_DEFAULT };
        return &state[fd];
}

static void record(const PtyState *s) {
        const char *path = getenv("SC_PTYSHIM_RECORD");
        char line[96];
        int fd, saved = errno;

        if (!path || !*path)
                return;
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
                errno = saved;
                return;
        }
        snprintf(line, sizeof(line), "cflag=0%o iflag=0%o modem=0x%x\n", (unsigned) s->requested.c_cflag,
                 (unsigned) s->requested.c_iflag, (unsigned) s->lines);
        (void) !write(fd, line, strlen(line));
        close(fd);
        errno = saved;
}

static bool is_modem_request(unsigned long request) {
        return request == TIOCMGET || request == TIOCMSET || request == TIOCMBIS || request == TIOCMBIC;
}

/* Matches glibc's declaration: int ioctl(int, unsigned long, ...). Every request we pass
 * through takes at most one pointer-sized argument. */
int ioctl(int fd, unsigned long request, ...) {
        static ioctl_fn real_ioctl;
        PtyState *s = NULL;
        va_list ap;
        void *arg;

        va_start(ap, request);
        arg = va_arg(ap, void *);
        va_end(ap);

        if (is_modem_request(request))
                s = pty_state(fd);
        if (s) {
                int *value = arg;

                if (!value) {
                        errno = EFAULT;
                        return -1;
                }
                switch (request) {
                case TIOCMGET:
                        *value = s->lines;
                        break;
                case TIOCMSET:
                        s->lines = *value;
                        break;
                case TIOCMBIS:
                        s->lines |= *value;
                        break;
                default: /* TIOCMBIC */
                        s->lines &= ~*value;
                        break;
                }
                if (request != TIOCMGET && s->have_cflag)
                        record(s);
                return 0;
        }

        if (!real_ioctl && !(real_ioctl = (ioctl_fn) real("ioctl")))
                return -1;
        return real_ioctl(fd, request, arg);
}

int tcsetattr(int fd, int action, const struct termios *t) {
        static tcsetattr_fn real_tcsetattr;
        PtyState *s = t ? pty_state(fd) : NULL;
        struct termios copy;

        if (!real_tcsetattr && !(real_tcsetattr = (tcsetattr_fn) real("tcsetattr")))
                return -1;
        if (!s)
                return real_tcsetattr(fd, action, t);

        copy = *t;
        copy.c_cflag = (copy.c_cflag & ~PTY_LOST_CFLAG) | CS8;
        if (real_tcsetattr(fd, action, &copy) < 0)
                return -1;
        s->have_cflag = true;
        s->cflag = t->c_cflag & PTY_LOST_CFLAG;
        s->requested = *t;
        record(s);
        return 0;
}

int tcgetattr(int fd, struct termios *t) {
        static tcgetattr_fn real_tcgetattr;
        PtyState *s;

        if (!real_tcgetattr && !(real_tcgetattr = (tcgetattr_fn) real("tcgetattr")))
                return -1;
        if (real_tcgetattr(fd, t) < 0)
                return -1;
        s = pty_state(fd);
        if (s && s->have_cflag)
                t->c_cflag = (t->c_cflag & ~PTY_LOST_CFLAG) | s->cflag;
        return 0;
}
