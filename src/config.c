/* SPDX-License-Identifier: MIT */
/* Placeholder until the module lands. */
#include "collector/config.h"
int config_load(const char *path, Config **ret_config, char ***ret_errors) { (void) path; (void) ret_config; (void) ret_errors; return -EOPNOTSUPP; }
Config *config_free(Config *c) { free(c); return NULL; }
