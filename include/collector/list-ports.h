/* SPDX-License-Identifier: MIT */
/* `sensor-collector list-ports`: a read-only helper for people on the gateway. */
#pragma once

/* Prints the serial ports libserialport knows with their USB description, VID:PID, serial
 * number and by-id path (the name to put in serial.device). argv[0] is "list-ports". Returns a
 * process exit status (0, 64 for a bad argument, 1 when the ports cannot be listed). */
int list_ports_main(int argc, char **argv);
