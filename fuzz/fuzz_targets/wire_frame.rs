//! Fuzzes the sync protocol's frame decoding: a length header and a control message. Decoding
//! must never panic, and whatever decodes must encode back to a frame that decodes to the same
//! message.

#![no_main]

use cairn_protocol::wire::{self, CONTROL_FRAME_MAX, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = wire::frame_len(*header, CONTROL_FRAME_MAX) else {
        return;
    };
    let body = &body[..len.min(body.len())];
    if let Ok(request) = wire::decode::<Request>(body) {
        let _ = request.check();
        let frame = wire::encode(&request).expect("a decoded request encodes");
        assert_eq!(wire::decode::<Request>(&frame[4..]).ok(), Some(request));
    }
    if let Ok(response) = wire::decode::<Response>(body) {
        let frame = wire::encode(&response).expect("a decoded response encodes");
        assert_eq!(wire::decode::<Response>(&frame[4..]).ok(), Some(response));
    }
});
