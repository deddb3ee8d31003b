//! HTTP/1.1 by hand over one TCP connection, for what a pooled client cannot do: send from a
//! chosen loopback address (IP hash), walk away in the middle of a request (client abort), or
//! send many requests on one connection of known fate.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::client::Response;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to 127.0.0.1:`port` from `local_ip` (any 127.0.0.0/8 address works on Linux).
pub fn connect_from(local_ip: Ipv4Addr, port: u16) -> Result<TcpStream, String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(local_ip, 0)).into())
        .map_err(|e| format!("bind {local_ip}: {e}"))?;
    let target = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    socket
        .connect_timeout(&target.into(), TIMEOUT)
        .map_err(|e| format!("connect {target} from {local_ip}: {e}"))?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

fn request_text(path: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!("GET {path} HTTP/1.1\r\nhost: eisodos.test\r\nconnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// One GET from `local_ip` to 127.0.0.1:`port`, read to the end.
pub fn get_from(
    local_ip: Ipv4Addr,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    exchange_from(local_ip, port, request_text(path, headers).as_bytes())
}

/// One GET to 127.0.0.1:`port` on a connection of its own, waiting up to `patience` for the
/// answer: for a request held at the upstream longer than the usual 5 s timeout allows.
pub fn get_patiently(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    patience: Duration,
) -> Result<Response, String> {
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, port)?;
    stream
        .set_read_timeout(Some(patience))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request_text(path, headers).as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    parse(&read_response(&mut stream)?)
}

/// Sends `request` as it is (any bytes, for requests a client library would refuse to build)
/// to 127.0.0.1:`port` and reads the answer to the end.
pub fn exchange(port: u16, request: &[u8]) -> Result<Response, String> {
    exchange_from(Ipv4Addr::LOCALHOST, port, request)
}

fn exchange_from(local_ip: Ipv4Addr, port: u16, request: &[u8]) -> Result<Response, String> {
    let mut stream = connect_from(local_ip, port)?;
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    parse(&read_response(&mut stream)?)
}

/// Reads one response: up to the end of its body when it has a `content-length`, else to the
/// end of the stream. Not to the end in every case: after a local reply Envoy waits for the
/// client to close first (`delayed_close_timeout`, 1 s), so reading to the end would wait that
/// long for each such response.
fn read_response(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        if let Some(end) = complete_length(&raw) {
            raw.truncate(end);
            return Ok(raw);
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the whole response in `raw`, once its head and a `content-length` body are
/// all there.
fn complete_length(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let length: usize = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    (raw.len() >= head_end + length).then_some(head_end + length)
}

/// One keep-alive connection for many requests in a row, each answered before the next is
/// sent: fast enough to send 100,000 requests in a test, while one connection stays on one of
/// Envoy's workers.
pub struct Connection {
    stream: TcpStream,
}

impl Connection {
    /// Connects to 127.0.0.1:`port`.
    pub fn open(port: u16) -> Result<Self, String> {
        Ok(Self {
            stream: connect_from(Ipv4Addr::LOCALHOST, port)?,
        })
    }

    /// One GET on the connection, kept open; the answer must have a `content-length`.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let mut text = format!("GET {path} HTTP/1.1\r\nhost: eisodos.test\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        self.stream
            .write_all(text.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let raw = read_response(&mut self.stream)?;
        if complete_length(&raw).is_none() {
            return Err("the connection ended before the answer did".to_owned());
        }
        parse(&raw)
    }
}

/// Sends a GET, waits `after`, and closes the connection without reading the answer: a client
/// that gave up.
pub fn abort_after(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    after: Duration,
) -> Result<(), String> {
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, port)?;
    stream
        .write_all(request_text(path, headers).as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    std::thread::sleep(after);
    stream
        .shutdown(std::net::Shutdown::Both)
        .map_err(|e| format!("shutdown: {e}"))
}

fn parse(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {text:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        body: body.to_owned(),
        headers,
    })
}
