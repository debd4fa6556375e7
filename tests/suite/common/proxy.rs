//! A TCP proxy on 127.0.0.1 that can cut the network: clients talk to the proxy's port,
//! and [`Proxy::set_up`]`(false)` closes every connection and refuses new ones, while the
//! service behind it keeps its state (a broker's producer ids, an emulator's buckets).
//! Included with `#[path]` as the crate's `proxy` module.

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// While down, its connections are shut and its port refuses new ones.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = Proxy {
            port,
            up: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
        };
        let (up, stop, connections) = (
            proxy.up.clone(),
            proxy.stop.clone(),
            proxy.connections.clone(),
        );
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            while !stop.load(Ordering::Relaxed) {
                if !up.load(Ordering::Relaxed) {
                    listener = None; // refuse connections while down
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let accepting = listener.get_or_insert_with(|| {
                    let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
                    listener.set_nonblocking(true).unwrap();
                    listener
                });
                match accepting.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue; // tansu not listening yet: the client sees a close
                        };
                        let mut open = connections.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("proxy accept: {e}"),
                }
            }
        });
        proxy
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        if !up {
            for stream in self.connections.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` into `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.set_up(false);
    }
}
