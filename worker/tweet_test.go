package worker

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// tweetLine returns a deterministic, tweet-shaped JSON document of about
// 6 KB for seed i, shaped like the archived stream this service ingests:
// a status with its user, entities and a quoted retweet, with non-ASCII
// text written as \uXXXX escapes (surrogate pairs for emoji), as the
// archives do.
func tweetLine(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 0x6a65746c696e65))
	id := 1_200_000_000_000_000_000 + int64(i)*7919
	tweet := map[string]any{
		"created_at":                "Wed Oct 10 20:19:24 +0000 2018",
		"id":                        id,
		"id_str":                    fmt.Sprint(id),
		"text":                      words(r, 28),
		"source":                    `<a href="http://twitter.com/download/android" rel="nofollow">Twitter for Android</a>`,
		"truncated":                 false,
		"in_reply_to_status_id":     nil,
		"in_reply_to_user_id":       nil,
		"in_reply_to_screen_name":   nil,
		"user":                      user(r, i),
		"geo":                       nil,
		"coordinates":               nil,
		"place":                     nil,
		"contributors":              nil,
		"is_quote_status":           false,
		"quote_count":               r.IntN(100),
		"reply_count":               r.IntN(100),
		"retweet_count":             r.IntN(10000),
		"favorite_count":            r.IntN(10000),
		"entities":                  entities(r),
		"favorited":                 false,
		"retweeted":                 false,
		"filter_level":              "low",
		"lang":                      []string{"en", "es", "ja", "ar", "pt"}[r.IntN(5)],
		"timestamp_ms":              fmt.Sprint(1539202764000 + i),
		"possibly_sensitive":        r.IntN(10) == 0,
		"display_text_range":        []int{0, 140},
		"retweeted_status":          retweet(r, i),
		"extended_tweet_full_text":  words(r, 40),
		"withheld_in_countries":     []string{},
		"matching_rules_tag_id_str": fmt.Sprint(r.Int64()),
	}
	b, err := json.Marshal(tweet)
	if err != nil {
		panic(err)
	}
	return asciiEscape(b)
}

func retweet(r *rand.Rand, i int) map[string]any {
	id := 1_100_000_000_000_000_000 + int64(i)*104729
	return map[string]any{
		"created_at":     "Tue Oct 09 11:02:10 +0000 2018",
		"id":             id,
		"id_str":         fmt.Sprint(id),
		"text":           words(r, 30),
		"source":         `<a href="https://mobile.twitter.com" rel="nofollow">Twitter Lite</a>`,
		"user":           user(r, i+1),
		"entities":       entities(r),
		"retweet_count":  r.IntN(10000),
		"favorite_count": r.IntN(10000),
		"lang":           "en",
	}
}

func user(r *rand.Rand, i int) map[string]any {
	id := 10_000_000 + int64(i)*31
	name := fmt.Sprintf("user_%d", i)
	return map[string]any{
		"id":                                 id,
		"id_str":                             fmt.Sprint(id),
		"name":                               words(r, 3),
		"screen_name":                        name,
		"location":                           words(r, 2),
		"url":                                "https://example.com/" + name,
		"description":                        words(r, 22),
		"translator_type":                    "none",
		"protected":                          false,
		"verified":                           r.IntN(50) == 0,
		"followers_count":                    r.IntN(1_000_000),
		"friends_count":                      r.IntN(5000),
		"listed_count":                       r.IntN(500),
		"favourites_count":                   r.IntN(100_000),
		"statuses_count":                     r.IntN(200_000),
		"created_at":                         "Sat Mar 14 09:12:45 +0000 2009",
		"utc_offset":                         nil,
		"time_zone":                          nil,
		"geo_enabled":                        true,
		"lang":                               nil,
		"contributors_enabled":               false,
		"is_translator":                      false,
		"profile_background_color":           "C0DEED",
		"profile_background_image_url":       "http://abs.twimg.com/images/themes/theme1/bg.png",
		"profile_background_image_url_https": "https://abs.twimg.com/images/themes/theme1/bg.png",
		"profile_background_tile":            false,
		"profile_link_color":                 "1DA1F2",
		"profile_sidebar_border_color":       "C0DEED",
		"profile_sidebar_fill_color":         "DDEEF6",
		"profile_text_color":                 "333333",
		"profile_use_background_image":       true,
		"profile_image_url":                  fmt.Sprintf("http://pbs.twimg.com/profile_images/%d/abcdefgh_normal.jpg", r.Int64()),
		"profile_image_url_https":            fmt.Sprintf("https://pbs.twimg.com/profile_images/%d/abcdefgh_normal.jpg", r.Int64()),
		"profile_banner_url":                 fmt.Sprintf("https://pbs.twimg.com/profile_banners/%d/1538000000", id),
		"default_profile":                    r.IntN(2) == 0,
		"default_profile_image":              false,
		"following":                          nil,
		"follow_request_sent":                nil,
		"notifications":                      nil,
	}
}

func entities(r *rand.Rand) map[string]any {
	var tags, mentions, urls []map[string]any
	for j := range 1 + r.IntN(3) {
		tags = append(tags, map[string]any{"text": words(r, 1), "indices": []int{j * 10, j*10 + 8}})
	}
	for j := range 1 + r.IntN(2) {
		id := r.Int64N(1 << 40)
		mentions = append(mentions, map[string]any{
			"screen_name": fmt.Sprintf("mention_%d", id%100000), "name": words(r, 2),
			"id": id, "id_str": fmt.Sprint(id), "indices": []int{j * 12, j*12 + 11},
		})
	}
	urls = append(urls, map[string]any{
		"url": "https://t.co/AbCdEf1234", "expanded_url": "https://example.org/articles/" + fmt.Sprint(r.Int64()),
		"display_url": "example.org/articles/\u2026", "indices": []int{100, 123},
	})
	return map[string]any{"hashtags": tags, "urls": urls, "user_mentions": mentions, "symbols": []any{}}
}

var vocabulary = []string{
	"the", "stream", "data", "ingest", "morning", "coffee", "rain", "city", "game", "tonight",
	"amazing", "new", "video", "music", "love", "today", "news", "update", "thanks", "friends",
	"caf\u00e9", "na\u00efve", "\u00fcber", "se\u00f1or", "\u3053\u3093\u306b\u3061\u306f", "\u4e16\u754c",
	"\u0645\u0631\u062d\u0628\u0627", "\u041f\u0440\u0438\u0432\u0435\u0442", "\U0001F600", "\U0001F525",
	"\U0001F389", "\u2764\ufe0f", "#jetline", "@someone", "https://t.co/xyz", "&amp;", "<3",
}

func words(r *rand.Rand, n int) string {
	var b strings.Builder
	for j := range n {
		if j > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[r.IntN(len(vocabulary))])
	}
	return b.String()
}

// asciiEscape rewrites every non-ASCII rune of a JSON document as a \uXXXX
// escape. It is only correct for documents whose non-ASCII bytes all sit
// inside strings, which is true of json.Marshal output.
func asciiEscape(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/4)
	for len(b) > 0 {
		c := b[0]
		if c < utf8.RuneSelf {
			out = append(out, c)
			b = b[1:]
			continue
		}
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		if r > 0xFFFF {
			r -= 0x10000
			out = fmt.Appendf(out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			continue
		}
		out = fmt.Appendf(out, `\u%04x`, r)
	}
	return out
}
