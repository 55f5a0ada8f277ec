package spool

import (
	"archive/zip"
	"bytes"
	"mime"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/line-agent/line-agent/command"
)

// maxNameBytes bounds a file name as written (macOS allows 255 bytes; the
// bridge's stager keeps 200). A longer name loses its beginning, never its
// extension.
const maxNameBytes = 200

// defaultName is the name of a file whose caller gave none.
const defaultName = "attachment"

// Admit is the one rule for a file a command sends, shared by every door
// that writes one for Messages (the spool's Stage, behind the private-API
// helper, and the AppleScript sender): nothing else decides whether a file
// is a program.
//
// It returns the name the file is to be written under: name as CleanName
// leaves it, with the declared type's extension when it has none (never for
// application/octet-stream), cut to maxNameBytes. That exact name is judged,
// with the declared type and the content, and the result is an
// INVALID_ARGUMENT error when any of them says program, script, installer,
// disk image or link file. A caller writes the file under exactly the name
// returned, or under a generated name that keeps at most its extension.
//
// Errors never repeat the name: taken from a URL, it may be a path segment
// the URL's owner considers secret.
func Admit(name, mimeType string, data []byte) (string, error) {
	clean, err := CleanName(name)
	if err != nil {
		return "", err
	}
	clean = command.CutFileName(withTypeExt(clean, mimeType), maxNameBytes)
	if err := judge(clean, mimeType, data); err != nil {
		return "", err
	}
	return clean, nil
}

// CleanName returns name as it would be written, or an INVALID_ARGUMENT
// error when it cannot be written as given: a name carrying control or
// invisible formatting characters, a path separator, invalid UTF-8, or
// being "." or "..". Such names are refused, not repaired, because the
// repaired name ("run.command/" to "run.command") is not what the caller
// was judged by. An empty name is "attachment".
func CleanName(name string) (string, error) {
	if name == "" {
		return defaultName, nil
	}
	if !utf8.ValidString(name) {
		return "", invalid("the file name is not valid UTF-8")
	}
	for i, r := range name {
		switch {
		case unicode.IsControl(r):
			return "", invalid("the file name contains a control character (U+%04X at byte %d); give a plain name", r, i)
		case unicode.Is(unicode.Cf, r) && r != '\u200d': // the zero-width joiner builds emoji
			return "", invalid("the file name contains an invisible formatting character (U+%04X at byte %d), which can disguise its extension", r, i)
		case r == '/' || r == '\\':
			return "", invalid("the file name contains a path separator (%q at byte %d); give a bare name", r, i)
		}
	}
	switch {
	case name == "." || name == "..":
		return "", invalid("the file name is %q, which names a folder", name)
	case strings.TrimSpace(name) == "":
		return "", invalid("the file name is only whitespace")
	}
	return name, nil
}

// withTypeExt adds the declared type's extension to a name that has none,
// so that Messages previews the file; application/octet-stream means
// "unknown" and adds nothing.
func withTypeExt(name, mimeType string) string {
	if path.Ext(name) != "" || mimeType == "" {
		return name
	}
	mt, _, err := mime.ParseMediaType(mimeType)
	if err != nil || mt == "application/octet-stream" {
		return name
	}
	if exts, _ := mime.ExtensionsByType(mt); len(exts) > 0 {
		return name + exts[0]
	}
	return name
}

// forbiddenExt are extensions of programs, scripts, installers, disk
// images, plug-ins and link files (which open a path or a URL when
// clicked), lower case and without the dot. The recipient's Mac would
// quarantine most of them, but a line that sends malware gets flagged, and
// nothing a customer legitimately sends through a line needs them.
var forbiddenExt = map[string]bool{
	// macOS applications, bundles, plug-ins
	"app": true, "appex": true, "bundle": true, "framework": true, "kext": true, "plugin": true,
	"prefpane": true, "osax": true, "xpc": true, "dylib": true, "so": true, "action": true,
	"workflow": true, "terminal": true, "tool": true, "command": true,
	// scripts
	"sh": true, "bash": true, "zsh": true, "csh": true, "ksh": true, "fish": true, "pl": true,
	"py": true, "rb": true, "php": true, "js": true, "jse": true, "mjs": true, "applescript": true,
	"scpt": true, "scptd": true, "ps1": true, "vbs": true, "vbe": true, "wsf": true, "hta": true,
	// other platforms' programs and packages
	"exe": true, "dll": true, "com": true, "bat": true, "cmd": true, "msi": true, "scr": true,
	"cpl": true, "jar": true, "class": true, "bin": true, "appimage": true, "desktop": true,
	"deb": true, "rpm": true, "apk": true, "ipa": true, "xpi": true, "crx": true,
	// installers, profiles, disk images
	"pkg": true, "mpkg": true, "mobileconfig": true, "dmg": true, "iso": true, "sparseimage": true,
	"sparsebundle": true,
	// link files
	"webloc": true, "inetloc": true, "fileloc": true, "url": true, "lnk": true,
}

// forbiddenType are declared MIME types of programs and scripts.
var forbiddenType = map[string]bool{
	"application/x-msdownload": true, "application/x-msdos-program": true,
	"application/vnd.microsoft.portable-executable": true, "application/x-executable": true,
	"application/x-mach-binary": true, "application/x-elf": true, "application/x-sh": true,
	"application/x-csh": true, "text/x-shellscript": true, "application/x-apple-diskimage": true,
	"application/vnd.apple.installer+xml": true, "application/java-archive": true,
	"application/x-java-archive": true, "application/x-apple-aspen-config": true,
}

// magic are the first bytes of programs and scripts. Every Mach-O form is
// here: thin 32- and 64-bit in both byte orders, and universal (fat)
// headers, 32- and 64-bit, in both. 0xcafebabe is also a Java class file:
// refused either way.
var magic = []struct {
	b    []byte
	what string
}{
	{[]byte{0xfe, 0xed, 0xfa, 0xce}, "a Mach-O program"},
	{[]byte{0xce, 0xfa, 0xed, 0xfe}, "a Mach-O program"},
	{[]byte{0xfe, 0xed, 0xfa, 0xcf}, "a Mach-O program"},
	{[]byte{0xcf, 0xfa, 0xed, 0xfe}, "a Mach-O program"},
	{[]byte{0xca, 0xfe, 0xba, 0xbe}, "a universal Mach-O program or a Java class"},
	{[]byte{0xbe, 0xba, 0xfe, 0xca}, "a universal Mach-O program"},
	{[]byte{0xca, 0xfe, 0xba, 0xbf}, "a universal Mach-O program"},
	{[]byte{0xbf, 0xba, 0xfe, 0xca}, "a universal Mach-O program"},
	{[]byte("\x7fELF"), "an ELF program"},
	{[]byte("MZ"), "a Windows program"},
	{[]byte("#!"), "a script"},
	{[]byte("xar!"), "an installer package"},
	{[]byte("koly"), "a disk image"},
	{[]byte("FasdUAS"), "a compiled AppleScript"},
}

// maxZipEntries bounds how much of an archive is inspected.
const maxZipEntries = 10_000

// nameExt is name's extension, lower case, without the dot, judged as
// Finder would see it once trailing dots and spaces are gone.
func nameExt(name string) string {
	return strings.ToLower(strings.TrimPrefix(path.Ext(strings.TrimRight(name, ". ")), "."))
}

// judge refuses programs and scripts by content first (a name can lie),
// then by the name as written and the declared type, and looks inside zip
// archives (a .app bundle travels zipped) for either.
func judge(name, mimeType string, data []byte) error {
	if len(data) == 0 {
		return invalid("the file is empty")
	}
	for _, m := range magic {
		if bytes.HasPrefix(data, m.b) {
			return invalid("the file is %s; programs and scripts are not sent", m.what)
		}
	}
	// A UDIF disk image's signature is its last 512 bytes' first four.
	if len(data) >= 512 && bytes.HasPrefix(data[len(data)-512:], []byte("koly")) {
		return invalid("the file is a disk image; programs, installers and disk images are not sent")
	}
	if ext := nameExt(name); forbiddenExt[ext] {
		return invalid("files of type .%s are not sent (programs, scripts, installers, disk images and link files are refused)", ext)
	}
	if mimeType != "" {
		mt, _, err := mime.ParseMediaType(mimeType)
		if err != nil {
			mt = strings.ToLower(strings.TrimSpace(mimeType))
		}
		if forbiddenType[mt] {
			return invalid("files of type %s are not sent (programs and scripts are refused)", mt)
		}
	}
	if bytes.HasPrefix(data, []byte("PK\x03\x04")) {
		return judgeZip(data)
	}
	return nil
}

// judgeZip refuses an archive holding a program by name (a .app folder
// anywhere in an entry's path included) or by its executable bits. An
// archive that does not read is sent as bytes: Messages will not open it.
func judgeZip(data []byte) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil
	}
	if len(zr.File) > maxZipEntries {
		return invalid("the file is a zip archive with %d entries, over the %d inspected", len(zr.File), maxZipEntries)
	}
	for _, f := range zr.File {
		name := strings.TrimSuffix(strings.ReplaceAll(f.Name, `\`, "/"), "/")
		for _, seg := range strings.Split(name, "/") {
			if ext := nameExt(seg); forbiddenExt[ext] {
				return invalid("the file is a zip archive holding a .%s; programs, scripts and installers are not sent", ext)
			}
		}
		if f.Mode()&0o111 != 0 && !f.FileInfo().IsDir() {
			return invalid("the file is a zip archive holding an executable file; programs are not sent")
		}
	}
	return nil
}
