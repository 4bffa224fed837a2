//! Compiling listeners (with their TLS certificates) and the admin listener.

use super::*;

impl<'a> Compiler<'a> {
    pub(super) fn listeners(&mut self) -> Vec<ListenerSpec> {
        let at = root().key("listeners");
        if self.config.listeners.is_empty() {
            self.problems.at(
                at.clone(),
                "at least one listener is required, e.g. [{ name: http, bind: \"0.0.0.0:8080\" }]",
            );
        }
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in self.config.listeners.iter().enumerate() {
            let here = at.index(i);
            if !is_valid_name(&l.name) {
                self.problems.at(
                    here.key("name"),
                    format!(
                        "listener name `{}` may only use letters, digits, '-', '_' and '.'",
                        l.name
                    ),
                );
            }
            if !names.insert(l.name.as_str()) {
                self.problems.at(
                    here.key("name"),
                    format!("listener name `{}` is used twice", l.name),
                );
            }
            let bind = self.socket_addr(here.key("bind"), &l.bind);
            if let Some(b) = bind
                && b.port() != 0
                && !binds.insert(b)
            {
                self.problems.at(
                    here.key("bind"),
                    format!("{b} is bound by another listener"),
                );
            }
            let timeout = self.duration(
                here.key("header_read_timeout"),
                &l.header_read_timeout,
                DurationRange::TIMEOUT,
            );
            let send_timeout = self.duration(
                here.key("send_timeout"),
                &l.send_timeout,
                DurationRange::TIMEOUT,
            );
            let idle_timeout = self.duration(
                here.key("idle_timeout"),
                &l.idle_timeout,
                DurationRange::IDLE,
            );
            if let (Some(bind), Some(header_read_timeout), Some(send_timeout), Some(idle_timeout)) =
                (bind, timeout, send_timeout, idle_timeout)
            {
                let tls = l
                    .tls
                    .as_ref()
                    .and_then(|t| self.listener_tls(here.key("tls"), &l.name, t));
                if l.redirect_https && l.tls.is_some() {
                    self.problems.at(
                        here.key("redirect_https"),
                        "a TLS listener cannot redirect to https: it is https",
                    );
                }
                out.push(ListenerSpec {
                    name: l.name.clone(),
                    bind,
                    header_read_timeout,
                    send_timeout,
                    idle_timeout,
                    proxy_protocol: l.proxy_protocol,
                    tls,
                    redirect_https: l.redirect_https.then(|| l.https_port.unwrap_or(443)),
                });
            }
        }
        out
    }

    /// Load a listener's certificates now, so a broken file fails the config (or the reload).
    pub(super) fn listener_tls(
        &mut self,
        at: YamlPath,
        listener: &str,
        t: &ListenerTlsConfig,
    ) -> Option<TlsSpec> {
        if t.certificates.is_empty() {
            self.problems.at(
                at.key("certificates"),
                "list at least one { cert, key } pair",
            );
            return None;
        }
        let min_version = match t.min_version.as_deref() {
            None | Some("1.2") => MinVersion::Tls12,
            Some("1.3") => MinVersion::Tls13,
            Some(other) => {
                self.problems.at(
                    at.key("min_version"),
                    format!("`{other}` is not \"1.2\" or \"1.3\""),
                );
                MinVersion::Tls12
            }
        };
        let mut keys = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            match crate::tls::load_pair(&c.cert, &c.key) {
                Ok(key) => keys.push(key),
                Err(e) => self
                    .problems
                    .at(at.key("certificates").index(i), e.to_string()),
            }
        }
        self.tls_keys.insert(listener.to_owned(), keys);
        let session_tickets = self.session_tickets(at.key("session_tickets"), listener, t);
        let client_auth = self.client_auth(at.clone(), listener, t);
        Some(TlsSpec {
            certificates: t
                .certificates
                .iter()
                .map(|c| (c.cert.clone(), c.key.clone()))
                .collect(),
            min_version,
            session_tickets,
            client_auth,
        })
    }

    /// A listener's session ticket setting, with its keys made (or the key file read) now, so a
    /// broken key file fails the config (or the reload) as a broken certificate does.
    fn session_tickets(
        &mut self,
        at: YamlPath,
        listener: &str,
        t: &ListenerTlsConfig,
    ) -> SessionTickets {
        let config = &t.session_tickets;
        let setting = match (&config.key_file, config.enabled) {
            (None, false) => SessionTickets::Off,
            (None, true) => SessionTickets::RandomKeys,
            (Some(path), true) => SessionTickets::KeyFile(path.clone()),
            (Some(_), false) => {
                self.problems.at(
                    at.key("key_file"),
                    "has no use with `enabled: false`: remove one of them",
                );
                return SessionTickets::Off;
            }
        };
        match setting.ticketer() {
            Ok(Some(ticketer)) => {
                self.tls_tickets.insert(listener.to_owned(), ticketer);
            }
            Ok(None) => {}
            Err(e) => {
                let field = match setting {
                    SessionTickets::KeyFile(_) => at.key("key_file"),
                    _ => at,
                };
                self.problems.at(field, e.to_string());
            }
        }
        setting
    }

    pub(super) fn admin(&mut self) -> (Option<SocketAddr>, Option<String>) {
        let at = root().key("admin");
        let token = match &self.config.admin.token_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
                Ok(_) => {
                    self.problems
                        .at(at.key("token_file"), format!("{} is empty", path.display()));
                    None
                }
                Err(e) => {
                    self.problems.at(
                        at.key("token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            },
            None => None,
        };
        let Some(bind) = self.config.admin.bind.as_deref() else {
            return (None, token);
        };
        let addr = self.socket_addr(at.key("bind"), bind);
        if let Some(a) = addr
            && !a.ip().is_loopback()
            && self.config.admin.token_file.is_none()
        {
            self.problems.at(
                at.key("bind"),
                format!("{a} is reachable from other hosts: set admin.token_file to a file holding a bearer token"),
            );
        }
        (addr, token)
    }
}
