package imessagev1_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// declared is every method of the six services, as the published protos
// have them (TestPublishedCompat checks that against the package itself).
// The value says where the spectrum-ts 12.8.0 iMessage provider calls the
// method (line in @spectrum-ts/imessage/dist/index.js, key I of
// photon-api-facts.md): those are what line-relay has to serve for that
// SDK feature to work. "" marks methods it never calls; they are declared so
// that line-relay, embedding the generated Unimplemented*Server, answers them
// UNIMPLEMENTED.
var declared = map[string]map[string]string{
	"MessageService": {
		"SendTextMessage":                "I:1775",
		"SendAttachmentMessage":          "I:1786",
		"SendMultipartMessage":           "I:1852",
		"SendCustomizedMiniAppMessage":   "I:778",
		"UpdateCustomizedMiniAppMessage": "I:781",
		"EditMessage":                    "I:1869",
		"UnsendMessage":                  "I:1873",
		"SetReaction":                    "I:1397",
		"PlaceSticker":                   "",
		"NotifySilencedMessage":          "",
		"GetMessage":                     "I:1189", // targets missing from its cache
		"ListRecentMessages":             "",
		"ListChatMessages":               "",
		"GetEmbeddedMedia":               "",
		"SubscribeMessageEvents":         "I:2462",
	},
	"ChatService": {
		"CreateChat":          "I:2889",
		"MarkChatRead":        "I:1422",
		"SetBackground":       "I:738",
		"RemoveBackground":    "I:734",
		"ShareContactInfo":    "I:1948", // only with a cloud project, never in dedicated mode
		"SetTyping":           "I:2574",
		"GetChat":             "I:1329", // a group's participants and name
		"GetChatCount":        "",
		"HasBackground":       "",
		"SubscribeChatEvents": "", // spectrum-ts never subscribes
	},
	"GroupService": {
		"SetDisplayName":       "I:1431",
		"AddParticipants":      "I:1304",
		"RemoveParticipants":   "I:1312",
		"LeaveGroup":           "I:1319",
		"SetIcon":              "I:700",
		"RemoveIcon":           "I:696",
		"GetIcon":              "I:712",
		"SubscribeGroupEvents": "I:2480", // always opened
	},
	"PollService": {
		"CreatePoll":          "I:1801",
		"VotePoll":            "",
		"UnvotePoll":          "",
		"AddPollOption":       "",
		"GetPoll":             "I:2103", // on poll events
		"SubscribePollEvents": "I:2471", // always opened
	},
	"AttachmentService": {
		"GetAttachmentInfo":  "I:918",
		"UploadAttachment":   "I:1740",
		"DownloadAttachment": "I:856", // when an app reads an inbound attachment
	},
	"EventService": {
		"CatchUpEvents": "I:2428", // on every reconnect with a cursor
	},
}

// TestDeclaredServices: the package declares exactly the services and
// methods in declared, nothing more.
func TestDeclaredServices(t *testing.T) {
	got := map[string][]string{}
	for _, f := range ourFiles() {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				got[string(s.Name())] = append(got[string(s.Name())], string(s.Methods().Get(j).Name()))
			}
		}
	}
	for svc, methods := range declared {
		var want []string
		for m := range methods {
			want = append(want, m)
		}
		slices.Sort(want)
		have := slices.Sorted(slices.Values(got[svc]))
		if !slices.Equal(have, want) {
			t.Errorf("%s declares %v, want %v", svc, have, want)
		}
		delete(got, svc)
	}
	for svc := range got {
		t.Errorf("service %s is declared but not listed in declared", svc)
	}
}

// TestUnimplementedStubs calls every declared method, over a real gRPC
// connection, of a server that registers only the generated
// Unimplemented*Server types: each must answer UNIMPLEMENTED, which is what a
// relay that embeds them and overrides only what it serves gives the rest.
func TestUnimplementedStubs(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	imessagev1.RegisterMessageServiceServer(srv, imessagev1.UnimplementedMessageServiceServer{})
	imessagev1.RegisterChatServiceServer(srv, imessagev1.UnimplementedChatServiceServer{})
	imessagev1.RegisterGroupServiceServer(srv, imessagev1.UnimplementedGroupServiceServer{})
	imessagev1.RegisterPollServiceServer(srv, imessagev1.UnimplementedPollServiceServer{})
	imessagev1.RegisterAttachmentServiceServer(srv, imessagev1.UnimplementedAttachmentServiceServer{})
	imessagev1.RegisterEventServiceServer(srv, imessagev1.UnimplementedEventServiceServer{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })

	n := 0
	for _, f := range ourFiles() {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				m := s.Methods().Get(j)
				n++
				t.Run(fmt.Sprintf("%s/%s", s.Name(), m.Name()), func(t *testing.T) {
					err := call(t, cc, m)
					if status.Code(err) != codes.Unimplemented {
						t.Errorf("got %v, want UNIMPLEMENTED", err)
					}
				})
			}
		}
	}
	want := 0
	for _, ms := range declared {
		want += len(ms)
	}
	if n != want {
		t.Errorf("called %d methods, declared lists %d", n, want)
	}
}

// call invokes m with an empty request of its generated type and returns the
// call's error (for a stream, that of the first receive).
func call(t *testing.T, cc *grpc.ClientConn, m protoreflect.MethodDescriptor) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, out := newMessage(t, m.Input()), newMessage(t, m.Output())
	name := fmt.Sprintf("/%s/%s", m.Parent().FullName(), m.Name())
	if !m.IsStreamingClient() && !m.IsStreamingServer() {
		return cc.Invoke(ctx, name, in, out)
	}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{
		StreamName:    string(m.Name()),
		ServerStreams: m.IsStreamingServer(),
		ClientStreams: m.IsStreamingClient(),
	}, name)
	if err != nil {
		return err
	}
	// io.EOF means the server has already ended the stream; its status
	// comes from RecvMsg.
	if err := st.SendMsg(in); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(out)
}

func newMessage(t *testing.T, d protoreflect.MessageDescriptor) proto.Message {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
	if err != nil {
		t.Fatalf("no generated Go type for %s: %v", d.FullName(), err)
	}
	return mt.New().Interface()
}
