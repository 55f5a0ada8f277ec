package relay

import (
	"fmt"
	"slices"
	"strings"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// What a command needs of its agent's health, and what the relay holds
// back while an agent reports that a component is DOWN (docs/protocol.md,
// "Routing by health"). A command that reaches an agent which cannot run
// it fails (HELPER_UNAVAILABLE, UNAVAILABLE) or times out; held at the
// relay it waits, queued, until the component is back or its deadline
// passes, and a pool places a new end user on a line that can serve it.
//
// A requirement is one token of a command's needs: the components it
// names separated by "|", any of which is enough. The tokens are stored
// with each command (commands.needs), so the claim can leave out, in SQL,
// every command with a requirement the agent cannot meet now.
const (
	needJournal = component.Journal
	needChatDB  = component.ChatDB
	needHelper  = component.Helper
	// needSender is a plain send: the helper or AppleScript (Automation)
	// can do it.
	needSender = component.Helper + "|" + component.Automation
	needICloud = component.ICloud
)

// requirements is every token needsOf returns, for unmetRequirements.
var requirements = []string{needJournal, needChatDB, needHelper, needSender, needICloud}

// needers says, in words, which commands need each requirement, for
// GET /v1/agents.
var needers = map[string]string{
	needJournal: "every command but reads",
	needChatDB:  "every command",
	needHelper:  "typing, tapbacks, edits, unsends, read marks, renames, groups, backgrounds, and sends with an effect, a reply or a subject",
	needSender:  "plain sends (text or a file, and a new chat with one person)",
	needICloud:  "chat backgrounds",
}

// needsOf lists what cmd needs of its agent's health. A read needs only
// chat.db; a write needs the journal (the agent refuses what it cannot
// record) and chat.db (it proves every result), then what carries it to
// Messages: a plain send, or a new chat with one person and a first
// message, goes through the helper or AppleScript; everything else needs
// the helper, and a background needs iCloud besides.
func needsOf(cmd *linev1.Command) []string {
	if command.IsRead(cmd) {
		return []string{needChatDB}
	}
	needs := []string{needJournal, needChatDB}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		if plain(k.SendText.GetEffect(), k.SendText.GetReplyTo(), k.SendText.GetSubject()) {
			return append(needs, needSender)
		}
	case *linev1.Command_SendAttachment:
		if plain(k.SendAttachment.GetEffect(), k.SendAttachment.GetReplyTo(), "") {
			return append(needs, needSender)
		}
	case *linev1.Command_CreateChat:
		if len(k.CreateChat.GetParticipants()) == 1 && k.CreateChat.GetFirstMessage() != "" {
			return append(needs, needSender)
		}
	case *linev1.Command_SetBackground:
		return append(needs, needHelper, needICloud)
	case *linev1.Command_FetchAttachment:
		// A file copied out of Messages' folder: chat.db and the journal.
		return needs
	}
	return append(needs, needHelper)
}

// plain is a send AppleScript can make: no effect, no reply, no subject.
func plain(effect string, reply *linev1.ReplyTo, subject string) bool {
	return effect == "" && reply == nil && subject == ""
}

// heldNeed is a requirement an agent cannot meet now, and why.
type heldNeed struct {
	need   string
	reason string
}

// offersFor says which offered capabilities (Hello's, by short name) rely
// on each requirement. A requirement is held only for an agent that
// offers one of them: an agent that never had a helper offers no helper
// kind, so a typing command reaches it and is refused UNSUPPORTED at
// once, instead of waiting out its deadline for a helper that will not
// come; one whose helper went away still offers them (it says so in
// Hello), and its commands wait for the helper to be back. The journal
// and chat.db have no entry: every agent relies on them.
var offersFor = map[string]func(capability string) bool{
	needSender: func(c string) bool {
		return c == "send_text" || c == "send_attachment" || c == "create_chat"
	},
	needHelper: func(c string) bool {
		return c != "send_text" && c != "send_attachment" && c != "fetch_attachment"
	},
	needICloud: func(c string) bool { return c == "set_background" },
}

// unmetRequirements lists the requirements r's DOWN components leave
// unmet, in requirements' order, among those the agent's offered
// capabilities rely on (offersFor; the journal and chat.db always count).
// A component the report does not name is not down (an older agent, or
// one whose driver has no such part); only DOWN holds commands back,
// DEGRADED still routes. nil r holds nothing.
func unmetRequirements(r *linev1.HealthReport, offered []string) []heldNeed {
	down := map[string]*linev1.HealthComponent{}
	for _, c := range r.GetComponents() {
		if c.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_DOWN {
			down[c.GetName()] = c
		}
	}
	if len(down) == 0 {
		return nil
	}
	var out []heldNeed
	for _, need := range requirements {
		if offers := offersFor[need]; offers != nil && !slices.ContainsFunc(offered, offers) {
			continue
		}
		alts := strings.Split(need, "|")
		var why []string
		for _, a := range alts {
			c := down[a]
			if c == nil {
				why = nil
				break
			}
			why = append(why, fmt.Sprintf("%s is DOWN (%s)", a, c.GetDetail()))
		}
		if why != nil {
			out = append(out, heldNeed{need: need, reason: strings.Join(why, "; ")})
		}
	}
	return out
}

// heldTokens are the requirement tokens of held, for the claim's SQL.
func heldTokens(held []heldNeed) []string {
	out := make([]string, len(held))
	for i, h := range held {
		out[i] = h.need
	}
	return out
}

// meets reports whether needs has no requirement among held.
func meets(needs []string, held []heldNeed) bool {
	for _, h := range held {
		if slices.Contains(needs, h.need) {
			return false
		}
	}
	return true
}
