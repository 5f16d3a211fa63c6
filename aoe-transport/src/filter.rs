//! Which received frames can be answers of one initiator session: a description a transport
//! can hand to the kernel ([`Transport::filter_answers`](crate::Transport::filter_answers)),
//! so that frames meant for other sessions are dropped before they wake the program.
//!
//! Every AF_PACKET socket bound to AoE on an interface receives every AoE frame that reaches
//! the interface. With eight initiator processes reading from one host, each process's socket
//! would get all eight processes' answers: eight copies and eight wake-ups per answer, seven of
//! them for nothing. An [`AnswerFilter`] keeps the frames that may be the session's own
//! answers: the response flag set, the session's shelf and slot, and a tag whose frame slot
//! (the low 16 bits once the session's salt is taken off) is one the session has. That is a
//! first cut only: what passes is still checked in full by the session.
//!
//! [`AnswerFilter::program`] writes the filter as a classic BPF program (`SO_ATTACH_FILTER`);
//! [`AnswerFilter::passes`] is the same test in Rust, for transports that filter in process
//! and for testing the program.

use aoe_proto::ethernet::HEADER_LEN;

/// Offset of the AoE version and flags byte in an Ethernet frame.
const VER_FLAGS: u32 = HEADER_LEN as u32;
/// Offset of the shelf (major, 16 bits).
const SHELF: u32 = HEADER_LEN as u32 + 2;
/// Offset of the slot (minor, 8 bits).
const SLOT: u32 = HEADER_LEN as u32 + 4;
/// Offset of the 32-bit tag.
const TAG: u32 = HEADER_LEN as u32 + 6;
/// The response flag in the version and flags byte.
const RESPONSE: u8 = 0x08;
/// Bytes a frame needs for the filter to read its tag.
const MIN_LEN: usize = TAG as usize + 4;

/// The frames that may be answers of one session (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerFilter {
    /// The target's shelf (major address).
    pub shelf: u16,
    /// The target's slot (minor address).
    pub slot: u8,
    /// The salt the session XORs into every tag it sends.
    pub tag_salt: u32,
    /// How many frame slots the session numbers in its tags' low 16 bits: an answer passes
    /// when `(tag ^ tag_salt) & 0xFFFF` is below it.
    pub frame_slots: u16,
}

/// One classic BPF instruction, laid out as Linux's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BpfInsn {
    /// Operation.
    pub code: u16,
    /// Instructions skipped when a jump's test holds.
    pub jt: u8,
    /// Instructions skipped when it does not.
    pub jf: u8,
    /// The operand.
    pub k: u32,
}

// Classic BPF opcodes (<linux/bpf_common.h>): class | size | mode, class | op | source.
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const ALU_XOR_K: u16 = 0xa4; // BPF_ALU | BPF_XOR | BPF_K
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JMP_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Instructions in [`AnswerFilter::program`].
pub const PROGRAM_LEN: usize = 12;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

impl AnswerFilter {
    /// True when `frame`, a whole Ethernet frame, may be one of the session's answers.
    pub fn passes(&self, frame: &[u8]) -> bool {
        if frame.len() < MIN_LEN {
            return false;
        }
        let at = |o: u32| o as usize;
        let shelf = u16::from_be_bytes([frame[at(SHELF)], frame[at(SHELF) + 1]]);
        let tag = u32::from_be_bytes(frame[at(TAG)..at(TAG) + 4].try_into().unwrap_or_default());
        frame[at(VER_FLAGS)] & RESPONSE != 0
            && shelf == self.shelf
            && frame[at(SLOT)] == self.slot
            && (tag ^ self.tag_salt) & 0xFFFF < u32::from(self.frame_slots)
    }

    /// The filter as a classic BPF program for `SO_ATTACH_FILTER`: it keeps a frame whole when
    /// [`passes`](Self::passes) would, and drops it otherwise (a frame too short to hold a
    /// tag too: the kernel ends a program that loads past the end with 0).
    pub fn program(&self) -> [BpfInsn; PROGRAM_LEN] {
        // Jumps are relative to the next instruction: `DROP - i - 1` from instruction i.
        const DROP: u8 = (PROGRAM_LEN - 1) as u8;
        [
            /* 0 */ insn(LD_B_ABS, 0, 0, VER_FLAGS),
            /* 1 */ insn(JMP_JSET_K, 0, DROP - 2, u32::from(RESPONSE)),
            /* 2 */ insn(LD_H_ABS, 0, 0, SHELF),
            /* 3 */ insn(JMP_JEQ_K, 0, DROP - 4, u32::from(self.shelf)),
            /* 4 */ insn(LD_B_ABS, 0, 0, SLOT),
            /* 5 */ insn(JMP_JEQ_K, 0, DROP - 6, u32::from(self.slot)),
            /* 6 */ insn(LD_W_ABS, 0, 0, TAG),
            /* 7 */ insn(ALU_XOR_K, 0, 0, self.tag_salt),
            /* 8 */ insn(ALU_AND_K, 0, 0, 0xFFFF),
            /* 9 */ insn(JMP_JGE_K, DROP - 10, 0, u32::from(self.frame_slots)),
            /* 10 */ insn(RET_K, 0, 0, u32::MAX),
            /* 11 */ insn(RET_K, 0, 0, 0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs the instructions [`AnswerFilter::program`] uses, as the kernel does: a load past
    /// the end of the frame ends the program with 0.
    fn run(program: &[BpfInsn], frame: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            let load = |k: u32, n: usize| -> Option<u32> {
                let b = frame.get(k as usize..k as usize + n)?;
                Some(b.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)))
            };
            match i.code {
                LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                    let n = match i.code {
                        LD_W_ABS => 4,
                        LD_H_ABS => 2,
                        _ => 1,
                    };
                    match load(i.k, n) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                ALU_XOR_K => a ^= i.k,
                ALU_AND_K => a &= i.k,
                JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                    let holds = match i.code {
                        JMP_JEQ_K => a == i.k,
                        JMP_JGE_K => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if holds { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                code => panic!("opcode {code:#x} not run here"),
            }
        }
    }

    const FILTER: AnswerFilter = AnswerFilter { shelf: 7, slot: 3, tag_salt: 0xA5C3_0F1E, frame_slots: 16 };

    /// An answer of FILTER's session for frame slot `slot`, generation `generation`.
    fn answer(slot: u16, generation: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&0x88A2u16.to_be_bytes());
        f[14] = 0x10 | RESPONSE;
        f[16..18].copy_from_slice(&7u16.to_be_bytes());
        f[18] = 3;
        let tag = (u32::from(generation) << 16 | u32::from(slot)) ^ FILTER.tag_salt;
        f[20..24].copy_from_slice(&tag.to_be_bytes());
        f
    }

    #[test]
    fn the_sessions_answers_pass_and_nothing_else() {
        let program = FILTER.program();
        let check = |frame: &[u8], expected: bool, what: &str| {
            assert_eq!(FILTER.passes(frame), expected, "passes: {what}");
            assert_eq!(run(&program, frame) != 0, expected, "program: {what}");
        };
        check(&answer(0, 1), true, "slot 0");
        check(&answer(15, 0xFFFF), true, "the last slot");
        check(&answer(16, 1), false, "a slot the session does not have");
        let mut request = answer(0, 1);
        request[14] &= !RESPONSE;
        check(&request, false, "a request");
        let mut error = answer(1, 1);
        error[14] |= 0x04;
        check(&error, true, "an error answer");
        let mut shelf = answer(0, 1);
        shelf[17] = 8;
        check(&shelf, false, "another shelf");
        let mut slot = answer(0, 1);
        slot[18] = 4;
        check(&slot, false, "another slot");
        let mut unsalted = answer(0, 1);
        unsalted[20..24].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        check(&unsalted, false, "another session's tag");
        check(&answer(0, 1)[..23], false, "too short for a tag");
        check(&answer(0, 1)[..24], true, "just long enough");
        check(&[], false, "empty");
    }

    #[test]
    fn jumps_land_on_the_drop() {
        for (i, insn) in FILTER.program().iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                for skip in [insn.jt, insn.jf] {
                    assert!(i + 1 + usize::from(skip) < PROGRAM_LEN, "jump out of instruction {i}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_program_is_passes(
            frame in proptest::collection::vec(any::<u8>(), 0..64),
            shelf in prop_oneof![Just(7u16), any::<u16>()],
            slot in prop_oneof![Just(3u8), any::<u8>()],
            frame_slots in any::<u16>(),
            tag_salt in any::<u32>(),
        ) {
            let mut frame = frame;
            // Make matching addresses common enough to reach the tag test.
            if frame.len() >= 19 && frame[0] & 1 == 0 {
                frame[16..18].copy_from_slice(&shelf.to_be_bytes());
                frame[18] = slot;
                frame[14] |= RESPONSE;
            }
            let filter = AnswerFilter { shelf, slot, tag_salt, frame_slots };
            prop_assert_eq!(run(&filter.program(), &frame) != 0, filter.passes(&frame));
        }
    }
}
