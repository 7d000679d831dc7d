//! The dashboard's files, compiled into the binary so the hub serves them
//! from any working directory (e.g. as a systemd service). The icon is also
//! served at `/favicon.ico`, the path browsers and crawlers ask for whatever
//! the page links.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// An embedded file of web/ served at `path`.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../web/", $file)),
        }
    };
}

/// Every embedded file (every file of web/: a test checks none is left out).
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/style.css", "style.css", CSS),
    asset!("/app.js", "app.js", JS),
    asset!("/stream.js", "stream.js", JS),
    asset!("/format.js", "format.js", JS),
    asset!("/chart.js", "chart.js", JS),
    asset!("/fleet.js", "fleet.js", JS),
    asset!("/device.js", "device.js", JS),
    asset!("/history.js", "history.js", JS),
    asset!("/hub.js", "hub.js", JS),
    asset!("/account.js", "account.js", JS),
    asset!("/access.js", "access.js", JS),
    asset!("/login.html", "login.html", HTML),
    asset!("/login.js", "login.js", JS),
    asset!("/favicon.svg", "favicon.svg", SVG),
    // The same SVG: every current browser takes an SVG icon at this path.
    asset!("/favicon.ico", "favicon.svg", SVG),
];

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_web_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = if name == "index.html" {
                "/".to_string()
            } else {
                format!("/{name}")
            };
            assert!(find(&path).is_some(), "web/{name} is not in ASSETS");
        }
    }

    #[test]
    fn every_module_import_is_served() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in asset
                .body
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let Some(start) = line.find("\"/").or_else(|| line.find("'/")) else {
                    panic!("{}: imports must use absolute paths: {line}", asset.path);
                };
                let rest = &line[start + 1..];
                let end = rest.find(['"', '\'']).unwrap();
                assert!(
                    find(&rest[..end]).is_some(),
                    "{} imports {}",
                    asset.path,
                    &rest[..end]
                );
            }
        }
    }
}
