/* SPDX-License-Identifier: MIT */
/* Placeholder until the module lands. */
#include "collector/frame.h"
