//! Zero set-up: on an empty database `serve` creates a demo user with two
//! watchlists, so a newcomer sees prices move right away.

use crate::auth;
use crate::db::repo::{self, ItemInput};
use crate::db::{Db, DbConn, DbError};

pub const DEMO_USER: &str = "demo";

fn item(symbol: &str, quantity: Option<f64>, price: Option<f64>, memo: &str) -> ItemInput {
    ItemInput {
        symbol: symbol.to_owned(),
        quantity,
        purchase_price: price,
        memo: memo.to_owned(),
    }
}

/// Seeds the demo data if there are no users yet. Returns the demo token
/// when it created one (it is shown once and never stored in clear).
pub async fn seed_if_empty(db: &Db) -> Result<Option<String>, DbError> {
    db.run(|c| {
        if repo::count_users(c)? > 0 {
            return Ok(None);
        }
        // The demo user is an admin so the admin API can be tried too.
        let user = repo::create_user(c, DEMO_USER, true)?;
        let (token, hash) = auth::new_token();
        repo::insert_token(c, user.id, &hash, Some("demo"))?;
        create_watchlists(c, user.id)?;
        Ok(Some(token))
    })
    .await
}

/// The two demo watchlists, for `owner_id`: what a newcomer sees first (the
/// dashboard opens them by themselves on a first visit). The browser tests
/// use it too, so the README screenshot shows exactly this data.
pub fn create_watchlists(c: &mut DbConn, owner_id: i64) -> Result<(), DbError> {
    let tokyo = [
        item("7203.T", Some(100.0), Some(2700.0), "Toyota"),
        item("6758.T", Some(200.0), Some(3100.0), "Sony"),
        item("9984.T", Some(50.0), Some(8800.0), "SoftBank"),
        item("8306.T", Some(300.0), Some(1650.0), ""),
        item("^N225", None, None, "Nikkei 225 index"),
    ];
    let us = [
        item("AAPL", Some(10.0), Some(190.0), ""),
        item("MSFT", Some(5.0), Some(380.0), ""),
        item("NVDA", Some(20.0), Some(100.0), ""),
        item("GOOGL", None, None, "watching"),
    ];
    let lists = [
        (
            "Tokyo positions",
            "Demo: Tokyo Stock Exchange",
            true,
            &tokyo[..],
        ),
        ("US tech", "Demo: US large caps", false, &us[..]),
    ];
    for (name, description, is_public, items) in lists {
        let input = repo::WatchlistInput {
            owner_id,
            name,
            description,
            is_public,
            items,
        };
        repo::create_watchlist(c, &input, i64::MAX, i64::MAX)?;
    }
    Ok(())
}
