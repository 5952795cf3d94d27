//! Feeds arbitrary bytes, as an upstream would send them, to the proxy's
//! response-head parser, the body decoder its framing picks and the
//! client-head encoder. Nothing an upstream sends may panic a worker: the
//! parser never claims more than it was given, and the head the client
//! gets always parses back as one HTTP/1.1 response head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reliw::http::{BodyDecoder, BodyFraming, Method};
use reliw::proxy::head::{
    ClientFraming, ClientSide, ResponseFraming, parse_response, response_head,
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else { return };
    let method = if pick & 1 == 0 { Method::Get } else { Method::Head };
    let Ok(Some((head, len))) = parse_response(input, method, 2048) else { return };
    assert!(len <= input.len());
    let framing = ClientFraming::for_client(head.framing, pick >> 7);
    let side = ClientSide {
        tls: pick & 2 != 0,
        origin: (pick & 4 != 0).then_some(&b"https://client.example"[..]),
        upstream_origin: "http://127.0.0.1:8080",
        framing,
        close: pick & 8 != 0,
        keep_alive_10: false,
        date: "Thu, 01 Jan 1970 00:00:00 GMT",
        client_host: (pick & 16 != 0).then_some("Client.example:8443"),
        // The head of a body we encode on its way, whether or not the
        // upstream's answer would qualify: it must parse all the same.
        encoding: (pick & 32 != 0).then_some(reliw::http::coding::Coding::Gzip),
        vary_encoding: pick & 64 != 0,
    };
    let _ = head.encodable(&[String::from("text/*")], 512, 1 << 20, method == Method::Head);
    let mut out = Vec::new();
    response_head(&head, &side, &mut out);
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Response::new(&mut fields);
    match parsed.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len()),
        other => panic!("client head does not parse back: {other:?}"),
    }
    let body = &input[len..];
    let decoder = match head.framing {
        ResponseFraming::Length(n) => BodyDecoder::new(BodyFraming::Length(n), u64::MAX).ok(),
        ResponseFraming::Chunked => BodyDecoder::new(BodyFraming::Chunked, u64::MAX).ok(),
        ResponseFraming::None | ResponseFraming::UntilClose => None,
    };
    if let Some(mut decoder) = decoder {
        if let Ok(out) = decoder.decode(body) {
            assert!(out.consumed <= body.len());
            assert!(out.data.iter().all(|r| r.end <= out.consumed));
        }
    }
});
