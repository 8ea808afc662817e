//! Answers kept for a while: Kubewarden's 5-second cache of `get` and
//! `can_i` answers, bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a `get` or `can_i` answer is reused (Kubewarden's 5 s).
pub const ANSWER_TTL: Duration = Duration::from_secs(5);

/// At most this many answers are cached; beyond, expired ones are dropped
/// (and, if none had expired, all of them).
const CACHED_ANSWERS: usize = 4096;

/// Answers kept for a while ([`ANSWER_TTL`]).
pub(super) struct AnswerCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> AnswerCache<K, V> {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| value.clone())
    }

    pub(super) fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHED_ANSWERS {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= CACHED_ANSWERS {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_cache_stays_bounded() {
        let cache = AnswerCache::new(Duration::from_millis(50));
        cache.put("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"a"), None, "expired");
        let cache = AnswerCache::new(Duration::from_secs(60));
        for i in 0..CACHED_ANSWERS + 10 {
            cache.put(i, i);
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CACHED_ANSWERS, "{len}");
        assert_eq!(cache.get(&(CACHED_ANSWERS + 9)), Some(CACHED_ANSWERS + 9));
    }
}
