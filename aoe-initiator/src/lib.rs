//! aoe-initiator
