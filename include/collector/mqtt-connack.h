/* SPDX-License-Identifier: MIT */
/* What a broker's CONNACK refusal means for us: retry or give up, and which errno. */
#pragma once

#include <stdbool.h>

#include "collector/config.h"

/* True for the refusals no retry can fix: credentials, authorization, identity, protocol (a
 * broker that is unavailable, busy, over quota or moved is retried). rc is the CONNACK return
 * code (MQTT 3.1.1: 1..5) or reason code (MQTT 5: 0x80 and up) of the given protocol. Pure. */
bool mqtt_connack_is_fatal(MqttProtocol protocol, int rc);

/* The negative errno that stands for a refusal: -EACCES (credentials, authorization),
 * -EPROTONOSUPPORT, -EINVAL (client id), -ECONNREFUSED (unavailable, busy), else -EPROTO. */
int mqtt_connack_errno(MqttProtocol protocol, int rc);
