//! How client commands reach the server: `--api`/`CORRAL_ADDR` and
//! `--token`/`CORRAL_TOKEN`. Only client commands take them; `server`,
//! `agent` and `dev` have their own settings (a variable left in the
//! shell for the CLI must not configure a server).

use anyhow::Result;
pub use corral_client::DEFAULT_PORT;
use corral_client::{CLI_ADDR_SETTING, Client, normalize_addr};

pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct Conn {
    /// The server's API address: http://HOST:PORT, HOST:PORT, or HOST
    /// (port 7070).
    #[arg(
        long = "api",
        env = "CORRAL_ADDR",
        default_value = DEFAULT_API,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub addr: String,
    /// The API token, when the server requires one.
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Conn {
    pub fn client(&self) -> Result<Client> {
        let addr = normalize_addr(&self.addr, CLI_ADDR_SETTING)?;
        Ok(Client::new(&addr, self.token.clone()))
    }
}
