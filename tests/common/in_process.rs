//! The server run in this process, as a library (`server::run`), with one
//! front end on a port the system picks.

use std::sync::Arc;

use clap::Parser;
use redis_proxy::app::App;
use redis_proxy::config::Config;
use redis_proxy::server::{self, Listeners};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::DEADLINE;

pub struct InProcess {
    pub app: Arc<App>,
    /// The front end's port.
    pub port: u16,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<()>,
}

impl InProcess {
    /// Serves `frontend` (`"http"` or `"resp"`) on 127.0.0.1 against
    /// `redis_url`, the other front ends off; `args` are more flags.
    pub async fn start(redis_url: &str, frontend: &str, args: &[&str]) -> InProcess {
        let listen = |name: &str| if name == frontend { "127.0.0.1:0" } else { "off" };
        let mut all = vec!["redis-proxy", "--redis-url", redis_url];
        all.extend(["--http-listen", listen("http"), "--resp-listen", listen("resp")]);
        all.extend(["--admin-listen", "off"]);
        all.extend(args);
        let config = Config::try_parse_from(all).unwrap();
        let app = App::build(&config).unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        let bound = if frontend == "http" {
            &listeners.http
        } else {
            &listeners.resp
        };
        let port = bound.as_ref().unwrap().local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server::run(app.clone(), listeners, async {
            let _ = stopped.await;
            server::Signal::Interrupt
        }));
        InProcess {
            app,
            port,
            stop,
            serving,
        }
    }

    /// Completes the server's shutdown future, and waits for it to drain.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(DEADLINE, self.serving)
            .await
            .expect("run returned after its shutdown future completed")
            .unwrap();
    }
}
