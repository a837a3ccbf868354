//! The embedded files of `api_service/web/`. Adding a file there means adding a line to
//! [`FILES`] (a test fails until it is listed).
//!
//! All assets share one directory named by a hash of all of them, so the ES modules import
//! each other by relative URL (`./api.js`) and a change to any file moves the whole set to a
//! new, never-cached URL. Each file's own ETag is a hash of its bytes. The hash is FNV-1a
//! (64 bits): it names content for caches, it guards nothing.

use std::sync::LazyLock;

/// Where assets are served: `/assets/<hash>/<file>`.
pub const ASSETS_PREFIX: &str = "/assets/";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! embed {
    ($name:literal, $content_type:expr) => {
        (
            $name,
            $content_type,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $name)) as &[u8],
        )
    };
}

/// Every asset: name (as in the URL), content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    embed!("app.js", JS),
    embed!("api.js", JS),
    embed!("dom.js", JS),
    embed!("format.js", JS),
    embed!("symbol.js", JS),
    embed!("chart.js", JS),
    embed!("view-signin.js", JS),
    embed!("view-quote.js", JS),
    embed!("watchlist.js", JS),
    embed!("view-history.js", JS),
    embed!("view-stats.js", JS),
    embed!("view-users.js", JS),
    embed!("view-account.js", JS),
    embed!("style.css", CSS),
    embed!("favicon.svg", SVG),
];

/// The page, with `{{assets}}` standing for the asset directory's URL and
/// `{{stream_max_symbols}}` for this instance's `STREAM_MAX_SYMBOLS` (filled per request).
const PAGE_TEMPLATE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/index.html"));

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    etag: String,
}

impl Asset {
    /// The strong ETag, quotes included: `"0123456789abcdef"`.
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

struct Bundle {
    dir: String,
    assets: Vec<Asset>,
    page: String,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let mut all = Fnv::new();
    let assets: Vec<Asset> = FILES
        .iter()
        .map(|&(name, content_type, bytes)| {
            all.write(name.as_bytes());
            all.write(&[0]);
            all.write(bytes);
            Asset {
                name,
                content_type,
                bytes,
                etag: format!("\"{:016x}\"", Fnv::hash(bytes)),
            }
        })
        .collect();
    let dir = format!("{:016x}", all.finish());
    let page = PAGE_TEMPLATE.replace("{{assets}}", &format!("{ASSETS_PREFIX}{dir}"));
    Bundle { dir, assets, page }
});

/// The current asset directory's name (the content hash).
pub fn asset_dir() -> &'static str {
    &BUNDLE.dir
}

/// The asset called `name`, if there is one.
pub fn find_asset(name: &str) -> Option<&'static Asset> {
    BUNDLE.assets.iter().find(|asset| asset.name == name)
}

/// The HTML page with its asset URLs filled in (the per-instance values still as `{{…}}`).
pub fn page_html() -> &'static str {
    &BUNDLE.page
}

/// The page as served: the watchlist learns the stream's symbol cap from it (a
/// `<meta name="stream-max-symbols">`), so it never opens a stream the server would refuse
/// with 429, whatever the operator set.
pub fn page_for(stream_max_symbols: usize) -> String {
    page_html().replace("{{stream_max_symbols}}", &stream_max_symbols.to_string())
}

/// Every embedded asset (tests check each is reachable and listed).
#[cfg(test)]
pub fn all_assets() -> &'static [Asset] {
    &BUNDLE.assets
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }

    fn hash(bytes: &[u8]) -> u64 {
        let mut hasher = Self::new();
        hasher.write(bytes);
        hasher.finish()
    }
}
