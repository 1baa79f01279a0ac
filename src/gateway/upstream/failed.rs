//! Why an upstream request got no response head, in the short words the logs and error
//! bodies use (`connection refused`, `connection reset`, `cannot connect (…)`).

/// Why a request did not get a response head.
#[derive(Debug)]
pub struct SendError {
    /// The connection could not be made (refused, unresolvable, TLS): nothing was sent.
    pub connect: bool,
    /// A short reason (`connection refused`, `connection reset`…), never a URL.
    pub reason: String,
}

/// An upstream error as a short reason, from the kind of I/O error underneath when there is one.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    let mut hyper_err = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            hyper_err.get_or_insert(h);
        }
        source = s.source();
    }
    use std::io::ErrorKind;
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => return "connection refused".into(),
        Some(ErrorKind::ConnectionReset) => return "connection reset".into(),
        Some(ErrorKind::TimedOut) => return "connection timed out".into(),
        _ => {}
    }
    if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>()
        && client.is_connect()
    {
        // Say why (a TLS failure, an unresolvable host), from the innermost cause.
        let mut inner: &(dyn std::error::Error + 'static) = e;
        while let Some(s) = inner.source() {
            inner = s;
        }
        return short(format!("cannot connect ({inner})"));
    }
    if let Some(h) = hyper_err {
        if h.is_incomplete_message() {
            return "the connection closed before the response was complete".into();
        }
        if h.is_timeout() {
            return "timed out".into();
        }
        if h.is_parse() {
            return "the upstream sent a malformed HTTP response".into();
        }
        if h.is_body_write_aborted() || h.is_closed() || h.is_canceled() {
            return "the connection closed".into();
        }
    }
    // hyper's and hyper-util's messages name no URL, but keep a reason short.
    let mut text = e.to_string();
    if let Some(s) = e.source() {
        text = format!("{text}: {s}");
    }
    short(text)
}

/// Why a TCP connection could not be made, in the words [`describe`] uses.
pub fn describe_connect(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::TimedOut => "connection timed out".into(),
        _ => short(format!("cannot connect ({e})")),
    }
}

fn short(mut text: String) -> String {
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
