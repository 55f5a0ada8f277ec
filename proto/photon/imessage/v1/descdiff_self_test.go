package imessagev1_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestCompareAPIFindsChanges shows, without the network, that compareAPI sees
// each kind of difference TestPublishedCompat relies on: it compares our
// descriptors with a copy changed in one place at a time.
func TestCompareAPIFindsChanges(t *testing.T) {
	ours := declarations(ourFiles())
	if diffs := compareAPI(ours, ours); len(diffs) != 0 {
		t.Fatalf("our descriptors differ from themselves:\n%s", strings.Join(diffs, "\n"))
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, files map[string]*descriptorpb.FileDescriptorProto)
		want   string
	}{
		{"field number", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			field(t, fs, "GetMessageRequest", "message_guid").Number = proto.Int32(1)
		}, "photon.imessage.v1.GetMessageRequest.message_guid: number: ours 2, published 1"},
		{"field type", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			field(t, fs, "Message", "sender").TypeName = proto.String(".photon.imessage.v1.MessageMention")
		}, "photon.imessage.v1.Message.sender: type: ours message photon.imessage.v1.SingleServiceAddressInfo, published message photon.imessage.v1.MessageMention"},
		{"scalar kind", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			field(t, fs, "SubscribeMessageEventsResponse", "sequence").Type = descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum()
		}, "photon.imessage.v1.SubscribeMessageEventsResponse.sequence: type: ours uint64, published int64"},
		{"label", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			field(t, fs, "CreateChatRequest", "addresses").Label = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
		}, "photon.imessage.v1.CreateChatRequest.addresses: label: ours repeated, published optional"},
		{"proto3 optional", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			unoptional(t, fs, "CatchUpEventsRequest", "after_sequence")
		}, "photon.imessage.v1.CatchUpEventsRequest.after_sequence: optional keyword: ours true, published false"},
		{"oneof membership", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			field(t, fs, "CatchUpEventsResponse", "heartbeat").OneofIndex = nil
		}, "photon.imessage.v1.CatchUpEventsResponse.heartbeat: oneof: ours payload, published "},
		{"missing field", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			m := message(t, fs, "SetReactionRequest")
			m.Field = slices.DeleteFunc(m.Field, func(f *descriptorpb.FieldDescriptorProto) bool { return f.GetName() == "is_set" })
		}, "photon.imessage.v1.SetReactionRequest: field is_set = 3 declared here, absent from the published message"},
		{"enum value", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			for _, f := range fs {
				for _, e := range f.EnumType {
					for _, v := range e.Value {
						if v.GetName() == "TRANSFER_STATE_UNAVAILABLE" {
							v.Number = proto.Int32(3)
						}
					}
				}
			}
		}, "photon.imessage.v1.TRANSFER_STATE_UNAVAILABLE: number: ours -1, published 3"},
		{"method stream", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			method(t, fs, "EventService", "CatchUpEvents").ServerStreaming = proto.Bool(false)
		}, "photon.imessage.v1.EventService.CatchUpEvents: server streaming: ours true, published false"},
		{"method request", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			method(t, fs, "MessageService", "GetMessage").InputType = proto.String(".photon.imessage.v1.GetEmbeddedMediaRequest")
		}, "photon.imessage.v1.MessageService.GetMessage: request: ours photon.imessage.v1.GetMessageRequest, published photon.imessage.v1.GetEmbeddedMediaRequest"},
		{"extra method", func(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto) {
			s := service(t, fs, "ChatService")
			extra := proto.Clone(s.Method[0]).(*descriptorpb.MethodDescriptorProto)
			extra.Name = proto.String("ArchiveChat")
			s.Method = append(s.Method, extra)
		}, "photon.imessage.v1.ChatService: published method ArchiveChat is missing here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]*descriptorpb.FileDescriptorProto{}
			for _, f := range ourFiles() {
				files[f.Path()] = protodesc.ToFileDescriptorProto(f)
			}
			tc.change(t, files)
			changed := declarations(build(t, files))
			diffs := compareAPI(ours, changed)
			if !slices.ContainsFunc(diffs, func(d string) bool { return strings.HasPrefix(d, tc.want) }) {
				t.Errorf("compareAPI missed the change; want a line starting %q, got:\n%s", tc.want, strings.Join(diffs, "\n"))
			}
		})
	}
}

// build links changed copies of our files (with the well-known files they
// import) into new descriptors.
func build(t *testing.T, files map[string]*descriptorpb.FileDescriptorProto) []protoreflect.FileDescriptor {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var addDeps func(f protoreflect.FileDescriptor)
	addDeps = func(f protoreflect.FileDescriptor) {
		for i := range f.Imports().Len() {
			imp := f.Imports().Get(i).FileDescriptor
			if _, ours := files[imp.Path()]; ours || seen[imp.Path()] {
				continue
			}
			seen[imp.Path()] = true
			set.File = append(set.File, protodesc.ToFileDescriptorProto(imp))
			addDeps(imp)
		}
	}
	for _, f := range ourFiles() {
		addDeps(f)
	}
	for _, f := range files {
		set.File = append(set.File, f)
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatalf("the changed descriptors do not link: %v", err)
	}
	var out []protoreflect.FileDescriptor
	reg.RangeFilesByPackage(pkg, func(f protoreflect.FileDescriptor) bool {
		out = append(out, f)
		return true
	})
	return out
}

func message(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
	t.Helper()
	for _, f := range fs {
		for _, m := range f.MessageType {
			if m.GetName() == name {
				return m
			}
		}
	}
	t.Fatalf("no message %s", name)
	return nil
}

func field(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto, msg, name string) *descriptorpb.FieldDescriptorProto {
	t.Helper()
	for _, f := range message(t, fs, msg).Field {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no field %s.%s", msg, name)
	return nil
}

// unoptional turns a proto3 optional field into a plain one, dropping its
// synthetic oneof (the last one of the message, as protoc orders them).
func unoptional(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto, msg, name string) {
	t.Helper()
	m := message(t, fs, msg)
	f := field(t, fs, msg, name)
	if !f.GetProto3Optional() || int(f.GetOneofIndex()) != len(m.OneofDecl)-1 {
		t.Fatalf("%s.%s is not the last proto3 optional field", msg, name)
	}
	f.Proto3Optional = nil
	f.OneofIndex = nil
	m.OneofDecl = m.OneofDecl[:len(m.OneofDecl)-1]
}

func service(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto, name string) *descriptorpb.ServiceDescriptorProto {
	t.Helper()
	for _, f := range fs {
		for _, s := range f.Service {
			if s.GetName() == name {
				return s
			}
		}
	}
	t.Fatalf("no service %s", name)
	return nil
}

func method(t *testing.T, fs map[string]*descriptorpb.FileDescriptorProto, svc, name string) *descriptorpb.MethodDescriptorProto {
	t.Helper()
	for _, m := range service(t, fs, svc).Method {
		if m.GetName() == name {
			return m
		}
	}
	t.Fatalf("no method %s.%s", svc, name)
	return nil
}
