//! Authentication and authorisation: password hashing, access tokens, browser session
//! cookies, the user cache and the extractors handlers use to require a user or an admin.

pub mod extractors;
pub mod jwt;
pub mod login_throttle;
pub mod password;
pub mod session_cookie;
pub mod user_cache;
pub mod verified_tokens;

pub use extractors::{Admin, CurrentUser, Session};
pub use jwt::{Claims, JwtKeys};
pub use login_throttle::LoginThrottle;
pub use password::Hasher;
pub use session_cookie::SessionCookie;
pub use user_cache::UserCache;
