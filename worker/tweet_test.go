package worker

import "github.com/jetline/jetline/shared/devkit/tweetgen"

// tweetLine returns a deterministic status of about 5 KB for seed i, as
// [tweetgen] makes them: shaped like the archived stream this service
// ingests, with non-ASCII text written as \uXXXX escapes.
func tweetLine(i int) []byte {
	line, _ := tweetgen.New(uint64(i), 1_200_000_000_000_000_000+int64(i)).Line(nil)
	return line
}
