// Package tweetgen generates Twitter-API-shaped statuses as NDJSON lines,
// deterministically from a seed, for the end-to-end tests, the benchmark
// and sample data. Lines look like the archives jetline is fed: about 6 KB,
// a nested user object and entities, non-ASCII text written as \uXXXX
// escapes (emoji as surrogate pairs), and a share of retweets.
package tweetgen

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// Generator produces statuses. It is not safe for concurrent use; give each
// goroutine its own.
type Generator struct {
	rng  *rand.Rand
	next int64
	buf  []byte
	feed FeedOptions
}

// New returns a generator whose output depends only on seed. Status ids
// start at firstID and increase by one per line.
func New(seed uint64, firstID int64) *Generator {
	return &Generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), next: firstID}
}

// FeedOptions make a generator's lines a live feed's, the input
// deploy/pipelines/tweets-full.yaml is written for, where New's statuses
// each have an author of their own and mention no one.
type FeedOptions struct {
	// Users is the pool the authors and mentioned users are drawn from,
	// so that each comes again, with another follower count.
	Users int
	// DeleteEvery makes one line in DeleteEvery, on average, a delete
	// notice, {"delete":{"status":{"id":…,"user_id":…},…}}, of a status
	// among the last 1,000 ids or of one of the next 1,000, which it
	// reaches before the status does. 0: none.
	DeleteEvery int
}

// poolBase is the first user id of a feed's pool.
const poolBase = 1 << 40

// NewFeed returns a generator of a live feed whose output depends only on
// seed: statuses as New's, but by authors of the pool, most mentioning
// one or two of its users, and delete notices among them. Status ids
// start at firstID and increase by one per status; a delete notice takes
// none.
func NewFeed(seed uint64, firstID int64, o FeedOptions) *Generator {
	g := New(seed, firstID)
	g.feed = o
	return g
}

// Status describes the last generated line, for tests that check rows.
type Status struct {
	ID        int64
	Retweet   bool
	Lang      string
	CreatedAt time.Time
	// Delete is set on a delete notice, of status ID.
	Delete bool
}

var (
	langs    = []string{"en", "en", "en", "ja", "es", "pt", "ar", "und", "fr", "ko"}
	words    = []string{"data", "stream", "night", "coffee", "music", "game", "today", "love", "news", "city", "rain", "happy", "build", "ship", "cloud"}
	tags     = []string{"jetline", "NowPlaying", "tbt", "photo", "ff", "news", "música", "日本"}
	jaRunes  = []rune("あいうえおかきくけこさしすせそたちつてとなにぬねの日本語東京雨")
	emoji    = []rune{0x1F600, 0x1F602, 0x1F525, 0x2764, 0x1F44D, 0x1F389, 0x1F30A}
	arRunes  = []rune("مرحبابالعالم")
	accented = []rune("áéíóúñçãõü")
	baseTime = time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Line appends one status (without a newline) to dst and returns it with
// the status's description.
func (g *Generator) Line(dst []byte) ([]byte, Status) {
	r := g.rng
	if n := g.feed.DeleteEvery; n > 0 && r.IntN(n) == 0 {
		return g.deleteNotice(dst)
	}
	id := g.next
	g.next++
	st := Status{
		ID:        id,
		Retweet:   r.IntN(100) < 70, // archives are mostly retweets
		Lang:      langs[r.IntN(len(langs))],
		CreatedAt: baseTime.Add(time.Duration(id%31_000_000) * time.Second),
	}
	b := dst
	b = append(b, `{"created_at":"`...)
	b = st.CreatedAt.AppendFormat(b, time.RubyDate)
	b = append(b, `","id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"id_str":"`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `","text":"`...)
	b = g.text(b, st.Lang)
	b = append(b, `","source":"\u003ca href=\"http:\/\/twitter.com\/download\/iphone\" rel=\"nofollow\"\u003eTwitter for iPhone\u003c\/a\u003e","truncated":false,"in_reply_to_status_id":null,"in_reply_to_user_id":null,"in_reply_to_screen_name":null,`...)
	b = g.user(b, "user")
	b = append(b, `,"geo":null,"coordinates":null,"place":null,"contributors":null,`...)
	if st.Retweet {
		b = append(b, `"retweeted_status":{"created_at":"`...)
		b = st.CreatedAt.Add(-time.Hour).AppendFormat(b, time.RubyDate)
		b = append(b, `","id":`...)
		b = strconv.AppendInt(b, id/2, 10)
		b = append(b, `,"text":"`...)
		b = g.text(b, st.Lang)
		b = append(b, `",`...)
		b = g.user(b, "user")
		b = append(b, `,"retweet_count":`...)
		b = strconv.AppendInt(b, int64(r.IntN(50000)), 10)
		b = append(b, `,"favorite_count":`...)
		b = strconv.AppendInt(b, int64(r.IntN(90000)), 10)
		b = append(b, `},`...)
	}
	b = append(b, `"is_quote_status":false,"retweet_count":`...)
	b = strconv.AppendInt(b, int64(r.IntN(1000)), 10)
	b = append(b, `,"favorite_count":`...)
	b = strconv.AppendInt(b, int64(r.IntN(5000)), 10)
	b = append(b, `,"entities":{"hashtags":[`...)
	for i, n := 0, r.IntN(4); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"text":"`...)
		b = appendEscaped(b, tags[r.IntN(len(tags))])
		b = append(b, `","indices":[`...)
		b = strconv.AppendInt(b, int64(i*10), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(i*10+8), 10)
		b = append(b, `]}`...)
	}
	b = append(b, `],"urls":[],"user_mentions":[`...)
	if g.feed.Users > 0 {
		for i, n := 0, r.IntN(3); i < n; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			uid := poolBase + r.Int64N(int64(g.feed.Users))
			b = append(b, `{"screen_name":"`...)
			b = appendScreenName(b, uid)
			b = append(b, `","id":`...)
			b = strconv.AppendInt(b, uid, 10)
			b = append(b, `,"id_str":"`...)
			b = strconv.AppendInt(b, uid, 10)
			b = append(b, `","indices":[0,8]}`...)
		}
	}
	b = append(b, `],"symbols":[]},"favorited":false,"retweeted":false,"filter_level":"low","lang":"`...)
	b = append(b, st.Lang...)
	b = append(b, `","timestamp_ms":"`...)
	b = strconv.AppendInt(b, st.CreatedAt.UnixMilli(), 10)
	b = append(b, `"}`...)
	return b, st
}

// deleteNotice appends a delete notice, as the Twitter stream sent them,
// of a status among the last or the next 1,000.
func (g *Generator) deleteNotice(b []byte) ([]byte, Status) {
	r := g.rng
	id := g.next - 1000 + r.Int64N(2000)
	b = append(b, `{"delete":{"status":{"id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"id_str":"`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `","user_id":`...)
	b = strconv.AppendInt(b, poolBase+r.Int64N(int64(max(g.feed.Users, 1))), 10)
	b = append(b, `},"timestamp_ms":"`...)
	b = strconv.AppendInt(b, baseTime.Add(time.Duration(g.next%31_000_000)*time.Second).UnixMilli(), 10)
	b = append(b, `"}}`...)
	return b, Status{ID: id, Delete: true}
}

// Lines returns n lines joined by "\n", with a trailing newline.
func (g *Generator) Lines(n int) []byte {
	var out []byte
	for range n {
		out, _ = g.Line(out)
		out = append(out, '\n')
	}
	return out
}

func (g *Generator) text(b []byte, lang string) []byte {
	r := g.rng
	n := 52 + r.IntN(66)
	for i := range n {
		if i > 0 {
			b = append(b, ' ')
		}
		switch {
		case lang == "ja":
			for range 2 + r.IntN(5) {
				b = appendRuneEscaped(b, jaRunes[r.IntN(len(jaRunes))])
			}
		case lang == "ar":
			for range 3 + r.IntN(4) {
				b = appendRuneEscaped(b, arRunes[r.IntN(len(arRunes))])
			}
		default:
			b = append(b, words[r.IntN(len(words))]...)
			if r.IntN(8) == 0 {
				b = appendRuneEscaped(b, accented[r.IntN(len(accented))])
			}
		}
		if r.IntN(6) == 0 {
			b = appendRuneEscaped(b, emoji[r.IntN(len(emoji))])
		}
	}
	return b
}

func (g *Generator) user(b []byte, key string) []byte {
	r := g.rng
	uid := r.Int64N(1 << 40)
	if g.feed.Users > 0 {
		uid = poolBase + uid%int64(g.feed.Users)
	}
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, `":{"id":`...)
	b = strconv.AppendInt(b, uid, 10)
	b = append(b, `,"id_str":"`...)
	b = strconv.AppendInt(b, uid, 10)
	b = append(b, `","name":"`...)
	b = append(b, words[r.IntN(len(words))]...)
	b = append(b, ` user `...)
	b = strconv.AppendInt(b, uid%100000, 10)
	b = append(b, `","screen_name":"`...)
	b = appendScreenName(b, uid)
	b = append(b, `","location":"`...)
	b = appendRuneEscaped(b, jaRunes[r.IntN(len(jaRunes))])
	b = append(b, ` city","url":null,"description":"`...)
	b = g.text(b, "en")
	b = append(b, `","translator_type":"none","protected":false,"verified":false,"followers_count":`...)
	b = strconv.AppendInt(b, int64(r.IntN(2_000_000)), 10)
	b = append(b, `,"friends_count":`...)
	b = strconv.AppendInt(b, int64(r.IntN(5000)), 10)
	b = append(b, `,"listed_count":3,"favourites_count":`...)
	b = strconv.AppendInt(b, int64(r.IntN(100000)), 10)
	b = append(b, `,"statuses_count":`...)
	b = strconv.AppendInt(b, int64(r.IntN(200000)), 10)
	b = append(b, `,"created_at":"Wed Mar 04 11:12:13 +0000 2015","utc_offset":null,"time_zone":null,"geo_enabled":true,"lang":"en","contributors_enabled":false,"is_translator":false,"profile_background_color":"C0DEED","profile_background_image_url":"http:\/\/abs.twimg.com\/images\/themes\/theme1\/bg.png","profile_background_image_url_https":"https:\/\/abs.twimg.com\/images\/themes\/theme1\/bg.png","profile_background_tile":false,"profile_link_color":"1DA1F2","profile_sidebar_border_color":"C0DEED","profile_sidebar_fill_color":"DDEEF6","profile_text_color":"333333","profile_use_background_image":true,"profile_image_url":"http:\/\/pbs.twimg.com\/profile_images\/`...)
	b = strconv.AppendInt(b, uid, 10)
	b = append(b, `\/avatar_normal.jpg","profile_image_url_https":"https:\/\/pbs.twimg.com\/profile_images\/`...)
	b = strconv.AppendInt(b, uid, 10)
	b = append(b, `\/avatar_normal.jpg","profile_banner_url":"https:\/\/pbs.twimg.com\/profile_banners\/`...)
	b = strconv.AppendInt(b, uid, 10)
	b = append(b, `\/1500000000","default_profile":true,"default_profile_image":false,"following":null,"follow_request_sent":null,"notifications":null}`...)
	return b
}

// appendScreenName writes the screen name of user uid, the same wherever
// the user appears.
func appendScreenName(b []byte, uid int64) []byte {
	return strconv.AppendInt(append(b, 'u'), uid%1000000, 36)
}

const hexDigits = "0123456789abcdef"

// appendRuneEscaped writes r as a JSON \uXXXX escape, using a surrogate pair
// above the Basic Multilingual Plane, as Twitter's API does.
func appendRuneEscaped(b []byte, r rune) []byte {
	if r > 0xFFFF {
		r -= 0x10000
		b = appendU16(b, 0xD800+(r>>10))
		return appendU16(b, 0xDC00+(r&0x3FF))
	}
	return appendU16(b, r)
}

func appendU16(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
}

func appendEscaped(b []byte, s string) []byte {
	for _, r := range s {
		if r < 0x80 {
			b = append(b, byte(r))
			continue
		}
		b = appendRuneEscaped(b, r)
	}
	return b
}
