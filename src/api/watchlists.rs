//! Watchlist and item CRUD. Reads: the owner, or anyone signed in when the
//! watchlist is public. Writes: the owner only. Every change is passed on to
//! the live sessions through the control plane.

use super::json::Object;
use super::openapi::{Authenticated, JsonBody, OwnsItem, OwnsWatchlist, ReadsWatchlist};
use super::{ApiError, ErrorBody};
use crate::access::{self, Access};
use crate::auth::Caller;
use crate::control::ControlEvent;
use crate::db::models::{Item, Watchlist};
use crate::db::repo::{self, ItemInput, ItemPatch, WatchlistPatch};
use crate::db::{from_micros, DbConn, DbError};
use crate::domain::{Description, Memo, Price, Quantity, Symbol, WatchlistName};
use crate::quote::format_ts;
use crate::state::AppState;
use crate::worker::ItemView;
use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;

/// An item of a watchlist: a symbol and, optionally, a position in it.
#[derive(Serialize, ToSchema)]
#[schema(as = Item)]
pub struct ItemOut {
    /// Upper-case.
    pub symbol: String,
    #[schema(required = true)]
    pub quantity: Option<f64>,
    #[schema(required = true)]
    pub purchase_price: Option<f64>,
    pub memo: String,
    /// The item's place in the watchlist, from 0.
    pub position: i64,
    #[schema(format = DateTime)]
    pub added_at: String,
}

impl From<Item> for ItemOut {
    fn from(i: Item) -> Self {
        Self {
            symbol: i.symbol,
            quantity: i.quantity,
            purchase_price: i.purchase_price,
            memo: i.memo,
            position: i.position,
            added_at: format_ts(from_micros(i.added_at)),
        }
    }
}

/// A watchlist with its items, in order.
#[derive(Serialize, ToSchema)]
#[schema(as = Watchlist)]
pub struct WatchlistOut {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub items: Vec<ItemOut>,
}

impl WatchlistOut {
    fn new(w: Watchlist, items: Vec<Item>) -> Self {
        Self {
            id: w.id,
            owner_id: w.owner_id,
            name: w.name,
            description: w.description,
            is_public: w.is_public,
            created_at: format_ts(from_micros(w.created_at)),
            updated_at: format_ts(from_micros(w.updated_at)),
            items: items.into_iter().map(ItemOut::from).collect(),
        }
    }
}

/// An item as a client sends it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewItem)]
pub struct ItemIn {
    /// Stored upper-cased; at most once per watchlist.
    #[schema(value_type = Symbol)]
    symbol: String,
    /// Shares held.
    #[schema(minimum = 0.0, maximum = 1e15)]
    quantity: Option<f64>,
    /// Price paid per share.
    #[schema(minimum = 0.0, maximum = 1e15)]
    purchase_price: Option<f64>,
    #[schema(max_length = 500)]
    memo: Option<String>,
}

impl ItemIn {
    fn parse(self) -> Result<ItemInput, ApiError> {
        Ok(ItemInput {
            symbol: Symbol::parse(&self.symbol)?.to_string(),
            quantity: self
                .quantity
                .map(Quantity::parse)
                .transpose()?
                .map(Quantity::get),
            purchase_price: self
                .purchase_price
                .map(Price::parse)
                .transpose()?
                .map(Price::get),
            memo: Memo::parse("memo", self.memo.as_deref().unwrap_or(""))?.into_inner(),
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWatchlist {
    /// Unique among the owner's watchlists.
    #[schema(value_type = WatchlistName)]
    name: String,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Default false: only the owner sees it.
    is_public: Option<bool>,
    /// Each symbol at most once.
    items: Option<Vec<ItemIn>>,
}

/// The fields to change; absent or `null` ones stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWatchlist {
    #[schema(value_type = Option<WatchlistName>)]
    name: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    is_public: Option<bool>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn explicit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The fields to change; absent ones stay as they are. `null` clears
/// `quantity` or `purchase_price`, and leaves `memo` as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchItem {
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<f64>, minimum = 0.0, maximum = 1e15)]
    quantity: Option<Option<f64>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<f64>, minimum = 0.0, maximum = 1e15)]
    purchase_price: Option<Option<f64>>,
    #[schema(max_length = 500)]
    memo: Option<String>,
}

/// An item-level failure in words a client understands.
fn item_error(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => ApiError::NotFound("no such item".into()),
        DbError::Duplicate => ApiError::Duplicate("symbol already in this watchlist".into()),
        other => other.into(),
    }
}

/// A watchlist-level write failure in words a client understands.
fn watchlist_error(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => ApiError::NotFound("no such watchlist".into()),
        DbError::Duplicate => {
            ApiError::Duplicate("you already have a watchlist with this name".into())
        }
        other => other.into(),
    }
}

/// Tells live sessions of a watchlist about its new items.
fn notify_changed(state: &AppState, watchlist_id: i64, items: &[Item]) {
    state.control.publish(ControlEvent::ItemsChanged {
        watchlist_id,
        items: items.iter().filter_map(ItemView::from_row).collect(),
    });
}

/// Runs `f` with watchlist `id` in one database trip, once the caller has
/// `access` to it.
pub(super) async fn on_watchlist<T: Send + 'static>(
    state: &AppState,
    caller: &Caller,
    id: i64,
    access: Access,
    f: impl FnOnce(&mut DbConn, Watchlist) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let me = caller.user.id;
    state
        .db
        .run(move |c| {
            let w = access::load(c, id, me, access)?;
            f(c, w)
        })
        .await
}

/// Runs `f` on the items of watchlist `id` (owner only), then passes them on
/// as they are now to its live sessions.
async fn change_items<T: Send + 'static>(
    state: &AppState,
    caller: &Caller,
    id: i64,
    f: impl FnOnce(&mut DbConn) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (out, all) = on_watchlist(state, caller, id, Access::Write, move |c, _| {
        let out = f(c)?;
        Ok((out, repo::get_items(c, id)?))
    })
    .await?;
    notify_changed(state, id, &all);
    Ok(out)
}

/// The caller's own watchlists, with their items.
#[utoipa::path(
    tag = "watchlists",
    operation_id = "list_watchlists",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's watchlists.", body = [WatchlistOut]), Authenticated),
)]
#[get("/watchlists")]
pub async fn list(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let owner = caller.user.id;
    let out = state
        .db
        .run(move |c| {
            let lists = repo::list_watchlists(c, owner)?;
            let ids: Vec<i64> = lists.iter().map(|w| w.id).collect();
            let mut items = repo::get_items_of(c, &ids)?;
            Ok::<_, DbError>(
                lists
                    .into_iter()
                    .map(|w| {
                        let mine = items.remove(&w.id).unwrap_or_default();
                        WatchlistOut::new(w, mine)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// A new watchlist of the caller's, with its first items.
#[utoipa::path(
    tag = "watchlists",
    operation_id = "create_watchlist",
    security(("bearer" = [])),
    request_body = CreateWatchlist,
    responses(
        (status = 201, description = "Created.", body = WatchlistOut, links(
            ("GetWatchlist" = (operation_id = "get_watchlist", parameters(("id" = "$response.body#/id")))),
            ("UpdateWatchlist" = (operation_id = "update_watchlist", parameters(("id" = "$response.body#/id")))),
            ("DeleteWatchlist" = (operation_id = "delete_watchlist", parameters(("id" = "$response.body#/id")))),
            ("ListItems" = (operation_id = "list_items", parameters(("id" = "$response.body#/id")))),
            ("AddItem" = (operation_id = "add_item", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 409, description = "The caller has a watchlist of this name, or a symbol \
            appears twice (`duplicate`).", body = ErrorBody),
        (status = 422, description = "An invalid value (`invalid_value`), or the caller's \
            watchlists or the items would be over their limit (`limit_exceeded`).", body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[post("/watchlists")]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Object<CreateWatchlist>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let name = WatchlistName::parse(&body.name)?;
    let description = Description::parse("description", body.description.as_deref().unwrap_or(""))?;
    let items: Vec<ItemInput> = body
        .items
        .unwrap_or_default()
        .into_iter()
        .map(ItemIn::parse)
        .collect::<Result<_, _>>()?;
    let mut seen = HashSet::new();
    if let Some(dup) = items.iter().find(|i| !seen.insert(i.symbol.clone())) {
        return Err(ApiError::Duplicate(format!(
            "symbol {} appears twice",
            dup.symbol
        )));
    }
    let limits = state.settings.limits.clone();
    let owner = caller.user.id;
    let is_public = body.is_public.unwrap_or(false);
    let out = state
        .db
        .run(move |c| {
            let description = description.into_inner();
            let input = repo::WatchlistInput {
                owner_id: owner,
                name: name.as_str(),
                description: &description,
                is_public,
                items: &items,
            };
            let w = repo::create_watchlist(
                c,
                &input,
                limits.max_watchlists_per_user,
                limits.max_items_per_watchlist,
            )
            .map_err(watchlist_error)?;
            let items = repo::get_items(c, w.id)?;
            Ok::<_, ApiError>(WatchlistOut::new(w, items))
        })
        .await?;
    Ok(HttpResponse::Created().json(out))
}

/// A watchlist with its items: the owner's, or anyone's when public.
#[utoipa::path(
    tag = "watchlists",
    operation_id = "get_watchlist",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id.")),
    responses(
        (status = 200, description = "The watchlist.", body = WatchlistOut),
        ReadsWatchlist,
        Authenticated,
    ),
)]
#[get("/watchlists/{id}")]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let out = on_watchlist(&state, &caller, id, Access::Read, move |c, w| {
        let items = repo::get_items(c, id)?;
        Ok(WatchlistOut::new(w, items))
    })
    .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// Changes a watchlist's name, description or visibility (owner only).
///
/// Live sessions of others on it close when it turns private.
#[utoipa::path(
    tag = "watchlists",
    operation_id = "update_watchlist",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id.")),
    request_body = UpdateWatchlist,
    responses(
        (status = 200, description = "The watchlist as it is now.", body = WatchlistOut),
        OwnsWatchlist,
        (status = 409, description = "The caller has another watchlist of this name \
            (`duplicate`).", body = ErrorBody),
        (status = 422, description = "An invalid value (`invalid_value`).", body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[patch("/watchlists/{id}")]
pub async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: web::Json<Object<UpdateWatchlist>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let Object(body) = body.into_inner();
    let patch = WatchlistPatch {
        name: body
            .name
            .as_deref()
            .map(WatchlistName::parse)
            .transpose()?
            .map(String::from),
        description: body
            .description
            .as_deref()
            .map(|d| Description::parse("description", d))
            .transpose()?
            .map(|d| d.into_inner()),
        is_public: body.is_public,
        updated_at: None,
    };
    let out = on_watchlist(&state, &caller, id, Access::Write, move |c, _| {
        let w = repo::update_watchlist(c, id, patch).map_err(watchlist_error)?;
        let items = repo::get_items(c, id)?;
        Ok(WatchlistOut::new(w, items))
    })
    .await?;
    // Made private: others lose read access now, not whenever they
    // reconnect.
    state.control.publish(ControlEvent::Access {
        watchlist_id: id,
        owner_id: out.owner_id,
        is_public: out.is_public,
    });
    Ok(HttpResponse::Ok().json(out))
}

/// Deletes a watchlist (owner only).
///
/// Its live sessions close with 4404; its worker stops.
#[utoipa::path(
    tag = "watchlists",
    operation_id = "delete_watchlist",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id.")),
    responses(
        (status = 204, description = "Deleted."),
        OwnsWatchlist,
        Authenticated,
    ),
)]
#[delete("/watchlists/{id}")]
pub async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    on_watchlist(&state, &caller, id, Access::Write, move |c, _| {
        repo::delete_watchlist(c, id).map_err(watchlist_error)
    })
    .await?;
    state
        .control
        .publish(ControlEvent::Deleted { watchlist_id: id });
    Ok(HttpResponse::NoContent().finish())
}

/// The items of a watchlist, in order.
#[utoipa::path(
    tag = "watchlists",
    operation_id = "list_items",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id.")),
    responses(
        (status = 200, description = "The items.", body = [ItemOut]),
        ReadsWatchlist,
        Authenticated,
    ),
)]
#[get("/watchlists/{id}/items")]
pub async fn list_items(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let items = on_watchlist(&state, &caller, id, Access::Read, move |c, _| {
        Ok(repo::get_items(c, id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(items.into_iter().map(ItemOut::from).collect::<Vec<_>>()))
}

/// Adds an item at the end of a watchlist (owner only).
#[utoipa::path(
    tag = "watchlists",
    operation_id = "add_item",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id.")),
    request_body = ItemIn,
    responses(
        (status = 201, description = "Added.", body = ItemOut, links(
            ("UpdateItem" = (operation_id = "update_item", parameters(("id" = "$request.path.id"), ("symbol" = "$response.body#/symbol")))),
            ("DeleteItem" = (operation_id = "delete_item", parameters(("id" = "$request.path.id"), ("symbol" = "$response.body#/symbol")))),
        )),
        OwnsWatchlist,
        (status = 409, description = "The symbol is in the watchlist already (`duplicate`).",
            body = ErrorBody),
        (status = 422, description = "An invalid value (`invalid_value`), or the watchlist is \
            full (`limit_exceeded`).", body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[post("/watchlists/{id}/items")]
pub async fn add_item(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: web::Json<Object<ItemIn>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let item = body.into_inner().0.parse()?;
    let max = state.settings.limits.max_items_per_watchlist;
    let added = change_items(&state, &caller, id, move |c| {
        repo::add_item(c, id, &item, max).map_err(item_error)
    })
    .await?;
    Ok(HttpResponse::Created().json(ItemOut::from(added)))
}

/// The symbol of an item path; one that cannot be valid names no item.
fn path_symbol(raw: &str) -> Result<String, ApiError> {
    Symbol::parse(raw)
        .map(|s| s.to_string())
        .map_err(|_| ApiError::NotFound("no such item".into()))
}

/// Changes an item's quantity, purchase price or memo (owner only).
#[utoipa::path(
    tag = "watchlists",
    operation_id = "update_item",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id."), ("symbol" = Symbol, Path, description = "The item's symbol (any case).")),
    request_body = PatchItem,
    responses(
        (status = 200, description = "The item as it is now.", body = ItemOut),
        OwnsItem,
        (status = 422, description = "An invalid value (`invalid_value`).", body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[patch("/watchlists/{id}/items/{symbol}")]
pub async fn patch_item(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(i64, String)>,
    body: web::Json<Object<PatchItem>>,
) -> Result<HttpResponse, ApiError> {
    let (id, symbol) = path.into_inner();
    let symbol = path_symbol(&symbol)?;
    let Object(body) = body.into_inner();
    let patch = ItemPatch {
        quantity: body
            .quantity
            .map(|q| {
                q.map(Quantity::parse)
                    .transpose()
                    .map(|q| q.map(Quantity::get))
            })
            .transpose()?,
        purchase_price: body
            .purchase_price
            .map(|p| p.map(Price::parse).transpose().map(|p| p.map(Price::get)))
            .transpose()?,
        memo: body
            .memo
            .as_deref()
            .map(|m| Memo::parse("memo", m))
            .transpose()?
            .map(|m| m.into_inner()),
    };
    let item = change_items(&state, &caller, id, move |c| {
        repo::patch_item(c, id, &symbol, &patch).map_err(item_error)
    })
    .await?;
    Ok(HttpResponse::Ok().json(ItemOut::from(item)))
}

/// Removes an item (owner only).
#[utoipa::path(
    tag = "watchlists",
    operation_id = "delete_item",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The watchlist's id."), ("symbol" = Symbol, Path, description = "The item's symbol (any case).")),
    responses(
        (status = 204, description = "Removed."),
        OwnsItem,
        Authenticated,
    ),
)]
#[delete("/watchlists/{id}/items/{symbol}")]
pub async fn delete_item(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(i64, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, symbol) = path.into_inner();
    let symbol = path_symbol(&symbol)?;
    change_items(&state, &caller, id, move |c| {
        repo::delete_item(c, id, &symbol).map_err(item_error)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
