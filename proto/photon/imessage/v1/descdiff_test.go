package imessagev1_test

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/line-agent/line-agent/proto/photon/imessage/v1" // registers our descriptors
)

// pkg is the package the SDK calls; every declaration compared lives in it.
const pkg protoreflect.FullName = "photon.imessage.v1"

// api is the services, messages and enums of pkg in a set of files, by full
// name.
type api map[protoreflect.FullName]protoreflect.Descriptor

// declarations collects the services, messages (nested ones too) and enums of
// pkg declared in files.
func declarations(files []protoreflect.FileDescriptor) api {
	a := api{}
	for _, f := range files {
		if f.Package() != pkg {
			continue
		}
		a.addMessages(f.Messages())
		a.addEnums(f.Enums())
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			a[s.FullName()] = s
		}
	}
	return a
}

func (a api) addMessages(ms protoreflect.MessageDescriptors) {
	for i := range ms.Len() {
		m := ms.Get(i)
		a[m.FullName()] = m
		a.addMessages(m.Messages())
		a.addEnums(m.Enums())
	}
}

func (a api) addEnums(es protoreflect.EnumDescriptors) {
	for i := range es.Len() {
		e := es.Get(i)
		a[e.FullName()] = e
	}
}

func (a api) names() []protoreflect.FullName {
	names := make([]protoreflect.FullName, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ourFiles is what the generated Go registered for pkg: the descriptors
// line-relay will actually serve, not a fresh parse of the .proto files
// (make proto-check keeps the two the same).
func ourFiles() []protoreflect.FileDescriptor {
	var files []protoreflect.FileDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(f protoreflect.FileDescriptor) bool {
		files = append(files, f)
		return true
	})
	return files
}

// compareAPI lists every way in which a declaration of ours differs from the
// declaration of the same full name in published: a declaration of ours the
// published protos lack, and for each one both have, what compareMessage,
// compareEnum and compareService find. Published declarations we leave out
// are not differences (we need not declare AddressService); the caller checks
// that the ones it needs are there. Each line starts with the full name.
func compareAPI(ours, published api) []string {
	var diffs []string
	for _, name := range ours.names() {
		p, ok := published[name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: declared here, absent from the published protos", name))
			continue
		}
		switch o := ours[name].(type) {
		case protoreflect.MessageDescriptor:
			pm, ok := p.(protoreflect.MessageDescriptor)
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s: a message here, a %s in the published protos", name, kindOf(p)))
				continue
			}
			diffs = append(diffs, compareMessage(o, pm)...)
		case protoreflect.EnumDescriptor:
			pe, ok := p.(protoreflect.EnumDescriptor)
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s: an enum here, a %s in the published protos", name, kindOf(p)))
				continue
			}
			diffs = append(diffs, compareEnum(o, pe)...)
		case protoreflect.ServiceDescriptor:
			ps, ok := p.(protoreflect.ServiceDescriptor)
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s: a service here, a %s in the published protos", name, kindOf(p)))
				continue
			}
			diffs = append(diffs, compareService(o, ps)...)
		}
	}
	return diffs
}

func kindOf(d protoreflect.Descriptor) string {
	switch d.(type) {
	case protoreflect.MessageDescriptor:
		return "message"
	case protoreflect.EnumDescriptor:
		return "enum"
	case protoreflect.ServiceDescriptor:
		return "service"
	}
	return fmt.Sprintf("%T", d)
}

// differ appends "name: what: ours X, published Y" when X and Y differ.
func differ[T comparable](diffs []string, name protoreflect.FullName, what string, ours, published T) []string {
	if ours == published {
		return diffs
	}
	return append(diffs, fmt.Sprintf("%s: %s: ours %v, published %v", name, what, ours, published))
}

// compareMessage compares the file syntax (which decides presence and
// packing), every field in both directions, and the reserved and extension
// ranges.
func compareMessage(o, p protoreflect.MessageDescriptor) []string {
	name := o.FullName()
	var diffs []string
	diffs = differ(diffs, name, "syntax", o.ParentFile().Syntax(), p.ParentFile().Syntax())
	of, pf := o.Fields(), p.Fields()
	for i := range of.Len() {
		f := of.Get(i)
		g := pf.ByName(f.Name())
		if g == nil {
			diffs = append(diffs, fmt.Sprintf("%s: field %s = %d declared here, absent from the published message", name, f.Name(), f.Number()))
			continue
		}
		diffs = append(diffs, compareField(f, g)...)
	}
	for i := range pf.Len() {
		g := pf.Get(i)
		if of.ByName(g.Name()) == nil {
			diffs = append(diffs, fmt.Sprintf("%s: published field %s = %d (%s) is missing here", name, g.Name(), g.Number(), fieldType(g)))
		}
	}
	diffs = differ(diffs, name, "oneofs", oneofNames(o), oneofNames(p))
	diffs = differ(diffs, name, "reserved numbers", fieldRanges(o.ReservedRanges()), fieldRanges(p.ReservedRanges()))
	diffs = differ(diffs, name, "reserved names", names(o.ReservedNames()), names(p.ReservedNames()))
	diffs = differ(diffs, name, "extension ranges", fieldRanges(o.ExtensionRanges()), fieldRanges(p.ExtensionRanges()))
	return diffs
}

// compareField compares everything about a field that reaches the wire or
// the generated code: number, type (with the message or enum type's full
// name), label, presence (proto3 optional), oneof membership, packing, map
// and JSON name.
func compareField(f, g protoreflect.FieldDescriptor) []string {
	name := f.FullName()
	var diffs []string
	diffs = differ(diffs, name, "number", f.Number(), g.Number())
	diffs = differ(diffs, name, "type", fieldType(f), fieldType(g))
	diffs = differ(diffs, name, "label", f.Cardinality(), g.Cardinality())
	diffs = differ(diffs, name, "optional keyword", f.HasOptionalKeyword(), g.HasOptionalKeyword())
	diffs = differ(diffs, name, "presence", f.HasPresence(), g.HasPresence())
	diffs = differ(diffs, name, "oneof", realOneof(f), realOneof(g))
	diffs = differ(diffs, name, "packed", f.IsPacked(), g.IsPacked())
	diffs = differ(diffs, name, "map", f.IsMap(), g.IsMap())
	diffs = differ(diffs, name, "json name", f.JSONName(), g.JSONName())
	diffs = differ(diffs, name, "default", f.Default().String(), g.Default().String())
	return diffs
}

// fieldType is the field's kind, with the full name of its message or enum
// type: "string", "message photon.imessage.v1.Message".
func fieldType(f protoreflect.FieldDescriptor) string {
	switch f.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return fmt.Sprintf("%s %s", f.Kind(), f.Message().FullName())
	case protoreflect.EnumKind:
		return fmt.Sprintf("%s %s", f.Kind(), f.Enum().FullName())
	}
	return f.Kind().String()
}

// realOneof is the name of the field's declared oneof, "" when none. The
// synthetic oneof of a proto3 optional field is presence, compared apart.
func realOneof(f protoreflect.FieldDescriptor) string {
	if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
		return string(o.Name())
	}
	return ""
}

func oneofNames(m protoreflect.MessageDescriptor) string {
	var ns []string
	for i := range m.Oneofs().Len() {
		if o := m.Oneofs().Get(i); !o.IsSynthetic() {
			ns = append(ns, string(o.Name()))
		}
	}
	slices.Sort(ns)
	return strings.Join(ns, ",")
}

func fieldRanges(rs interface {
	Len() int
	Get(int) [2]protoreflect.FieldNumber
}) string {
	var out []string
	for i := range rs.Len() {
		r := rs.Get(i)
		out = append(out, fmt.Sprintf("%d-%d", r[0], r[1]-1))
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func names(ns protoreflect.Names) string {
	var out []string
	for i := range ns.Len() {
		out = append(out, string(ns.Get(i)))
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// compareEnum compares every value in both directions (name and number) and
// the file syntax (open or closed enum).
func compareEnum(o, p protoreflect.EnumDescriptor) []string {
	name := o.FullName()
	var diffs []string
	diffs = differ(diffs, name, "syntax", o.ParentFile().Syntax(), p.ParentFile().Syntax())
	ov, pv := o.Values(), p.Values()
	for i := range ov.Len() {
		v := ov.Get(i)
		w := pv.ByName(v.Name())
		if w == nil {
			diffs = append(diffs, fmt.Sprintf("%s: value %s = %d declared here, absent from the published enum", name, v.Name(), v.Number()))
			continue
		}
		diffs = differ(diffs, v.FullName(), "number", v.Number(), w.Number())
	}
	for i := range pv.Len() {
		if w := pv.Get(i); ov.ByName(w.Name()) == nil {
			diffs = append(diffs, fmt.Sprintf("%s: published value %s = %d is missing here", name, w.Name(), w.Number()))
		}
	}
	diffs = differ(diffs, name, "reserved names", names(o.ReservedNames()), names(p.ReservedNames()))
	return diffs
}

// compareService compares the method set in both directions and, per method,
// the request and response types and which sides stream.
func compareService(o, p protoreflect.ServiceDescriptor) []string {
	name := o.FullName()
	var diffs []string
	om, pm := o.Methods(), p.Methods()
	for i := range om.Len() {
		m := om.Get(i)
		n := pm.ByName(m.Name())
		if n == nil {
			diffs = append(diffs, fmt.Sprintf("%s: method %s declared here, absent from the published service", name, m.Name()))
			continue
		}
		diffs = differ(diffs, m.FullName(), "request", m.Input().FullName(), n.Input().FullName())
		diffs = differ(diffs, m.FullName(), "response", m.Output().FullName(), n.Output().FullName())
		diffs = differ(diffs, m.FullName(), "client streaming", m.IsStreamingClient(), n.IsStreamingClient())
		diffs = differ(diffs, m.FullName(), "server streaming", m.IsStreamingServer(), n.IsStreamingServer())
	}
	for i := range pm.Len() {
		if n := pm.Get(i); om.ByName(n.Name()) == nil {
			diffs = append(diffs, fmt.Sprintf("%s: published method %s is missing here (its UNIMPLEMENTED would not come from the generated stub)", name, n.Name()))
		}
	}
	return diffs
}
