/* SPDX-License-Identifier: MIT */
/* `sensor-collector list-ports`: the machine's serial ports and the stable names to configure. */
#include <dirent.h>
#include <errno.h>
#include <libserialport.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/exit-status.h"
#include "collector/list-ports.h"
#include "collector/macro.h"
#include "collector/serial-task.h"

static void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

/* Adds to out every link in dir that resolves to target, as "dir/name", comma separated. */
static void find_links(const char *dir, const char *target, char *out, size_t size) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        d = opendir(dir);
        if (!d)
                return;
        while ((de = readdir(d))) {
                char path[PATH_MAX], resolved[PATH_MAX];
                size_t used = strlen(out);

                if (de->d_name[0] == '.')
                        continue;
                if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= sizeof(path))
                        continue;
                if (!realpath(path, resolved) || !streq(resolved, target))
                        continue;
                snprintf(out + used, size - used, "%s%s", used ? ", " : "", path);
        }
}

static const char *transport_to_string(enum sp_transport t) {
        switch (t) {
        case SP_TRANSPORT_NATIVE:
                return "native";
        case SP_TRANSPORT_USB:
                return "usb";
        case SP_TRANSPORT_BLUETOOTH:
                return "bluetooth";
        default:
                return "unknown";
        }
}

static void print_port(struct sp_port *p) {
        const char *name = sp_get_port_name(p);
        char resolved[PATH_MAX], by_id[1024] = "", by_path[1024] = "";
        enum sp_transport transport = sp_get_port_transport(p);

        printf("%s\n", name);
        printf("  description:   %s\n", strna(sp_get_port_description(p)));
        printf("  transport:     %s", transport_to_string(transport));
        if (transport == SP_TRANSPORT_USB) {
                int bus, address, vid, pid;

                if (sp_get_port_usb_bus_address(p, &bus, &address) == SP_OK)
                        printf(" (bus %d, address %d)", bus, address);
                printf("\n");
                if (sp_get_port_usb_vid_pid(p, &vid, &pid) == SP_OK)
                        printf("  usb id:        %04x:%04x\n", (unsigned) vid & 0xffff, (unsigned) pid & 0xffff);
                printf("  manufacturer:  %s\n", strna(sp_get_port_usb_manufacturer(p)));
                printf("  product:       %s\n", strna(sp_get_port_usb_product(p)));
                printf("  serial number: %s\n", strna(sp_get_port_usb_serial(p)));
        } else if (transport == SP_TRANSPORT_BLUETOOTH) {
                printf("\n  address:       %s\n", strna(sp_get_port_bluetooth_address(p)));
        } else
                printf("\n");

        if (realpath(name, resolved)) {
                find_links("/dev/serial/by-id", resolved, by_id, sizeof(by_id));
                find_links("/dev/serial/by-path", resolved, by_path, sizeof(by_path));
        }
        /* The by-id name survives re-enumeration and other adapters coming and going: it is
         * what serial.device should say. */
        printf("  by-id:         %s\n", by_id[0] ? by_id : "n/a");
        printf("  by-path:       %s\n", by_path[0] ? by_path : "n/a");
}

int list_ports_main(int argc, char **argv) {
        struct sp_port **ports = NULL;
        enum sp_return sr;
        size_t n = 0;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
                        printf("Usage: sensor-collector list-ports\n\n"
                               "Lists the serial ports of this machine with their USB description, VID:PID,\n"
                               "serial number and their stable /dev/serial/by-id/ name, the one to put in\n"
                               "serial.device.\n");
                        return EXIT_STATUS_OK;
                }
                fprintf(stderr, "sensor-collector list-ports: unexpected argument '%s'\n"
                                "Usage: sensor-collector list-ports\n", argv[i]);
                return EXIT_STATUS_USAGE;
        }

        sr = sp_list_ports(&ports);
        if (sr < 0) {
                int r = serial_error(sr);

                fprintf(stderr, "sensor-collector list-ports: failed to list serial ports: %s\n", strerror(-r));
                return EXIT_STATUS_UNEXPECTED;
        }
        for (; ports[n]; n++) {
                if (n > 0)
                        printf("\n");
                print_port(ports[n]);
        }
        if (n == 0)
                printf("No serial ports found.\n");
        sp_free_port_list(ports);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "sensor-collector list-ports: failed to write the list: %s\n", strerror(errno));
                return EXIT_STATUS_UNEXPECTED;
        }
        return EXIT_STATUS_OK;
}
