package applescript

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func timestampAfter(d time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(time.Now().Add(d))
}
