//! The server side of NBD as a state machine.
