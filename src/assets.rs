//! The dashboard's files, compiled into the binary so the hub serves them
//! from any working directory (e.g. as a systemd service).

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

/// Every embedded file (every file of web/: a test checks none is left out).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/index.html"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/style.css"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
    },
    Asset {
        path: "/stream.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/stream.js"),
    },
    Asset {
        path: "/format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/format.js"),
    },
    Asset {
        path: "/chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/chart.js"),
    },
    Asset {
        path: "/fleet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/fleet.js"),
    },
    Asset {
        path: "/device.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/device.js"),
    },
    Asset {
        path: "/hub.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/hub.js"),
    },
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
