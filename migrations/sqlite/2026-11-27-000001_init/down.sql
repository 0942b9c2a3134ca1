DROP TABLE latest_quotes;
DROP TABLE watchlist_items;
DROP TABLE watchlists;
DROP TABLE api_tokens;
DROP TABLE users;
