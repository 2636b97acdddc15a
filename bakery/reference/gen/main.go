// Command gen prints, as one JSON document, the config fields and Pod types that
// bakery/reference/<minor>/ holds, reflected from the Kubernetes staging modules this
// module requires (go.mod pins them; bakery/reference/generate.py re-pins them to the
// minor it generates for). It is run by that script, not by hand:
//
//	python -m bakery.reference.generate --kubernetes 1.37.2
//
// Config kinds: every field reachable from the kind's Go type through its json tags,
// as dotted paths ("a.b"); a map, or a list of objects, is "a.*" (its keys or items
// are not walked); a type with its own JSON encoding (Duration, Quantity, RawExtension)
// is a leaf. A field whose Go doc has a "Deprecated:" paragraph is listed under
// deprecated with that paragraph.
//
// Pod types: every struct reachable from core/v1 Pod, named as the official clients
// name them (V1<Go name>), each as {json field: type} in the Python client's notation
// (str, int, bool, float, datetime, object, list[T], dict(str, T), V1<Name>).
package main

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	schedulerv1 "k8s.io/kube-scheduler/config/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

type configKind struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	GoType     string            `json:"goType"`
	Fields     []string          `json:"fields"`
	Deprecated map[string]string `json:"deprecated"`
}

type output struct {
	Modules map[string]string            `json:"modules"`
	Configs map[string]configKind        `json:"configs"`
	Pod     map[string]map[string]string `json:"pod"`
}

var marshaler = reflect.TypeOf((*json.Marshaler)(nil)).Elem()

// jsonName is the field's JSON name, "" for a field JSON skips, and whether it is inlined.
func jsonName(f reflect.StructField) (string, bool) {
	tag := f.Tag.Get("json")
	if tag == "-" || !f.IsExported() {
		return "", false
	}
	name, opts, _ := strings.Cut(tag, ",")
	if strings.Contains(","+opts+",", ",inline,") || (name == "" && f.Anonymous) {
		return "", true
	}
	if name == "" {
		name = f.Name
	}
	return name, false
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func leaf(t reflect.Type) bool {
	return t.Implements(marshaler) || reflect.PointerTo(t).Implements(marshaler)
}

// docs holds the Go doc of each struct field of the packages read so far: "pkgpath.Type.Field" -> text.
var docs = map[string]string{}
var readPkgs = map[string]bool{}

func readDocs(pkgPath string) {
	if pkgPath == "" || readPkgs[pkgPath] {
		return
	}
	readPkgs[pkgPath] = true
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", pkgPath).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen: go list %s: %v\n", pkgPath, err)
		os.Exit(1)
	}
	dir := strings.TrimSpace(string(out))
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen: parse %s: %v\n", dir, err)
		os.Exit(1)
	}
	for _, p := range pkgs {
		for _, f := range p.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok {
					return true
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return true
				}
				for _, fld := range st.Fields.List {
					if fld.Doc == nil {
						continue
					}
					for _, name := range fld.Names {
						docs[pkgPath+"."+ts.Name.Name+"."+name.Name] = fld.Doc.Text()
					}
				}
				return true
			})
		}
	}
}

// The "Deprecated:" paragraph, up to a blank line, a "Default:" line or a +marker line.
var deprecatedRe = regexp.MustCompile(`(?s)(?:^|\n)Deprecated:\s*(.*?)(?:\n\n|\nDefault:|\n\+|$)`)

func deprecation(owner reflect.Type, field string) string {
	readDocs(owner.PkgPath())
	m := deprecatedRe.FindStringSubmatch(docs[owner.PkgPath()+"."+owner.Name()+"."+field])
	if m == nil {
		return ""
	}
	return strings.Join(strings.Fields(m[1]), " ")
}

func walkConfig(t reflect.Type, prefix string, fields map[string]bool, deprecated map[string]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := jsonName(f)
		ft := deref(f.Type)
		if inline {
			walkConfig(ft, prefix, fields, deprecated)
			continue
		}
		if name == "" {
			continue
		}
		path := prefix + name
		if d := deprecation(t, f.Name); d != "" {
			deprecated[path] = d
		}
		switch {
		case leaf(ft):
			fields[path] = true
		case ft.Kind() == reflect.Map:
			fields[path+".*"] = true
		case ft.Kind() == reflect.Slice && deref(ft.Elem()).Kind() == reflect.Struct && !leaf(deref(ft.Elem())):
			fields[path+".*"] = true
		case ft.Kind() == reflect.Struct:
			fields[path] = true
			walkConfig(ft, path+".", fields, deprecated)
		default:
			fields[path] = true
		}
	}
}

func config(apiVersion, kind string, v any) configKind {
	t := reflect.TypeOf(v)
	fields := map[string]bool{}
	deprecated := map[string]string{}
	walkConfig(t, "", fields, deprecated)
	list := make([]string, 0, len(fields))
	for f := range fields {
		list = append(list, f)
	}
	sort.Strings(list)
	return configKind{apiVersion, kind, t.PkgPath() + "." + t.Name(), list, deprecated}
}

// podType is the Python client's notation for a Go type; structs are queued for walking.
func podType(t reflect.Type, queue *[]reflect.Type) string {
	t = deref(t)
	switch t.String() {
	case "v1.Time", "v1.MicroTime":
		if strings.HasSuffix(t.PkgPath(), "apimachinery/pkg/apis/meta/v1") {
			return "datetime"
		}
	case "resource.Quantity":
		return "str"
	case "intstr.IntOrString", "v1.FieldsV1", "runtime.RawExtension":
		return "object"
	}
	switch t.Kind() {
	case reflect.String:
		return "str"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "str" // []byte: base64 in JSON
		}
		return "list[" + podType(t.Elem(), queue) + "]"
	case reflect.Map:
		return "dict(str, " + podType(t.Elem(), queue) + ")"
	case reflect.Struct:
		*queue = append(*queue, t)
		return "V1" + t.Name()
	}
	return "object"
}

func podFields(t reflect.Type, into map[string]string, queue *[]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := jsonName(f)
		if inline {
			podFields(deref(f.Type), into, queue)
		} else if name != "" {
			into[name] = podType(f.Type, queue)
		}
	}
}

func podTypes() map[string]map[string]string {
	out := map[string]map[string]string{}
	queue := []reflect.Type{reflect.TypeOf(corev1.Pod{})}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		name := "V1" + t.Name()
		if _, done := out[name]; done {
			continue
		}
		fields := map[string]string{}
		out[name] = fields
		podFields(t, fields, &queue)
	}
	return out
}

func main() {
	out := output{
		Modules: map[string]string{},
		Configs: map[string]configKind{
			"kubelet-config":        config("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration", kubeletv1beta1.KubeletConfiguration{}),
			"kube-scheduler-config": config("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration", schedulerv1.KubeSchedulerConfiguration{}),
			"authentication-config": config("apiserver.config.k8s.io/v1", "AuthenticationConfiguration", apiserverv1.AuthenticationConfiguration{}),
		},
		Pod: podTypes(),
	}
	list, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}}", "k8s.io/api", "k8s.io/apiserver", "k8s.io/kube-scheduler", "k8s.io/kubelet").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen: go list -m: %v\n", err)
		os.Exit(1)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		path, version, _ := strings.Cut(line, " ")
		out.Modules[path] = version
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
