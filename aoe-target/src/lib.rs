//! aoe-target
