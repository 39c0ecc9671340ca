//! An axum app on an ephemeral port of 127.0.0.1, served from a thread of its own (so sync and
//! async tests alike can use it), stopped gracefully and joined on drop. The fakes in this
//! crate (the GitHub forge, the LLM stub) are served through it.

use std::thread::JoinHandle;

use axum::Router;

/// A bound port, not yet serving: its URL is known before the app is built.
pub(crate) struct Bound {
    listener: std::net::TcpListener,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

pub(crate) fn bind() -> Bound {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("an ephemeral port on 127.0.0.1");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    Bound { listener, url }
}

impl Bound {
    /// Serves `app` until the returned handle is dropped.
    pub(crate) fn serve(self, name: &str, app: Router) -> Served {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = self.listener;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for a loopback server");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("spawn a loopback server's thread");
        Served {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// A serving app; dropping it stops the server and waits for its thread.
pub(crate) struct Served {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
