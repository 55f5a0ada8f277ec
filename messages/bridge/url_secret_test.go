package bridge_test

import (
	"strings"
	"testing"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A refused URL's error names at most its scheme and host: never the path
// or the query, which may carry a signed token (issue 8 item 7).
func TestRefusedURLErrorHidesPathAndQuery(t *testing.T) {
	b, _ := listen(t, bridge.Options{})
	d := bridge.NewDriver(b, bridge.DriverOptions{Stager: bridge.DirStager{Dir: t.TempDir()}})
	const secret = "/SECRETPATHSEG/cat.png?sig=SECRETSIG123"
	for _, raw := range []string{"http://files.example" + secret, "ftp://user:SECRETPASS@files.example" + secret, "files.example" + secret} {
		for name, cmd := range map[string]*linev1.Command{
			"attachment": with(onChat(chat1), func(c *linev1.Command) {
				c.Kind = &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: raw}}}
			}),
			"background": with(onChat(chat1), func(c *linev1.Command) {
				c.Kind = &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Url{Url: raw}}}
			}),
		} {
			_, err := d.Execute(ctx(t), cmd, nil)
			e := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			for _, s := range []string{e.Error(), e.LastState, command.AsError(err).Proto().GetMessage()} {
				if strings.Contains(s, "SECRET") || strings.Contains(s, "sig=") {
					t.Errorf("%s %q: error %q repeats the url", name, raw, s)
					break
				}
			}
			if !strings.Contains(e.Msg, "not https") {
				t.Errorf("%s %q: message %q", name, raw, e.Msg)
			}
		}
	}
}
