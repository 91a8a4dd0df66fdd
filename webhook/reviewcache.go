package webhook

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A ReplicaSet scaling up or rolling out sends the webhook the same pod
// again and again: the API server's review of each replica carries the same
// object (no name yet, the same generateName, labels, owner and spec) and
// differs only in the review's uid and the managedFields timestamp. The
// injector is a pure function of the pod, its ServiceAccount and the
// process's defaults, so its answer to a pod it has seen is known: the
// ReviewCache keeps the last answers, keyed by exactly those inputs, and a
// repeated review costs a scan of the body instead of decoding, injecting,
// encoding and diffing the pod.
//
// The key holds the request's namespace and the object's bytes as sent,
// without metadata.managedFields, which the injector neither reads nor
// changes (so the patch never touches it). An answer is used only while
// the pod's ServiceAccount has the UID and resourceVersion it had when the
// answer was made, so an edited or recreated ServiceAccount is seen at once.

// DefaultReviewCacheSize is how many answers a webhook keeps by default: a
// rollout concerns a few pod templates at a time; an entry is a few kB.
const DefaultReviewCacheSize = 64

// maxCachedObjectBytes keeps unusually large pods out of the cache.
const maxCachedObjectBytes = 64 << 10

// ReviewCache holds the answers to recent pod reviews. It is safe for
// concurrent use; the zero value is not usable, see NewReviewCache.
type ReviewCache struct {
	seed maphash.Seed
	max  int

	mu    sync.Mutex
	byKey map[uint64]*list.Element // of *cachedAnswer
	lru   list.List                // front is the most recently used
}

// NewReviewCache returns a cache of at most size answers, or nil (no
// caching) when size is not positive.
func NewReviewCache(size int) *ReviewCache {
	if size <= 0 {
		return nil
	}
	return &ReviewCache{seed: maphash.MakeSeed(), max: size, byKey: make(map[uint64]*list.Element, size)}
}

// cachedAnswer is the injector's decision on one pod, without what belongs
// to a single review (its uid, dry run and, for named pods, the name).
type cachedAnswer struct {
	hash      uint64
	namespace string
	// object is the pod as sent, without the managedFields value, which
	// started at headLen (len(object) when it had none).
	object  []byte
	headLen int

	saNamespace, saName string
	saUID               types.UID
	saResourceVersion   string

	// response without its UID; its slices and pointers are shared by every
	// answer made from it and never modified.
	response     admissionv1.AdmissionResponse
	generateName string
	decision     string
	message      string
	vaults       []string
	objects      []string
}

// envelope is what a cache lookup reads from a review body, with the
// patch's scanner instead of a decode.
type envelope struct {
	uid       string
	namespace string
	name      string
	dryRun    bool
	// head and tail are the object's bytes before and after the value of
	// metadata.managedFields (tail is empty when it has none), managedFields
	// that value.
	head, tail, managedFields []byte
	// The object is body[objStart:objEnd].
	objStart, objEnd int
	// hash is the cache key's hash, set by the first lookup.
	hash   uint64
	hashed bool
}

func (e *envelope) objectLen() int { return len(e.head) + len(e.tail) }

// peekReview reads the envelope of a v1 review of a pod CREATE. It reports
// false for anything else, and for anything it does not read exactly as
// encoding/json would (escaped or differently cased names, invalid UTF-8),
// which then takes the full decode.
func peekReview(body []byte) (envelope, bool) {
	var env envelope
	sc, ok := newScan(body)
	if !ok {
		return env, false
	}
	defer sc.release()
	var topBuf, reqBuf, kindBuf [16]member
	top, ok := sc.members(topBuf[:0], body[skipSpace(body, 0):])
	if !ok || !exactNames(top, "apiVersion", "kind", "request") ||
		!isString(top, "apiVersion", admissionv1.SchemeGroupVersion.String()) ||
		!isString(top, "kind", "AdmissionReview") {
		return env, false
	}
	reqRaw, ok := field(top, "request")
	if !ok {
		return env, false
	}
	req, ok := sc.members(reqBuf[:0], reqRaw)
	if !ok || !exactNames(req, "operation", "kind", "subResource", "uid", "namespace", "name", "dryRun", "object") ||
		!isString(req, "operation", string(admissionv1.Create)) {
		return env, false
	}
	kindRaw, ok := field(req, "kind")
	if !ok {
		return env, false
	}
	kind, ok := sc.members(kindBuf[:0], kindRaw)
	if !ok || !exactNames(kind, "group", "kind") || !isString(kind, "group", "") || !isString(kind, "kind", "Pod") {
		return env, false
	}
	if sub, ok := field(req, "subResource"); ok && string(sub) != `""` && string(sub) != "null" {
		return env, false
	}
	if env.uid, ok = stringField(req, "uid"); !ok {
		return env, false
	}
	if env.namespace, ok = stringField(req, "namespace"); !ok {
		return env, false
	}
	if env.name, ok = stringField(req, "name"); !ok {
		return env, false
	}
	if v, ok := field(req, "dryRun"); ok {
		switch string(v) {
		case "true":
			env.dryRun = true
		case "false", "null":
		default:
			return env, false
		}
	}
	obj, ok := field(req, "object")
	if !ok || len(obj) == 0 || obj[0] != '{' {
		return env, false
	}
	env.head, env.managedFields, env.tail, ok = sc.cutManagedFields(obj)
	// The scanner's values are slices of body: their capacities tell where.
	env.objStart = cap(body) - cap(obj)
	env.objEnd = env.objStart + len(obj)
	return env, ok
}

// valid reports whether body, whose object matched a cached one, is JSON.
// The cached object came from a body that decoded, so only the rest need
// checking: the envelope around the object and the new managedFields.
func (e *envelope) valid(body []byte) bool {
	var stack [2048]byte
	around := append(append(append(stack[:0], body[:e.objStart]...), "{}"...), body[e.objEnd:]...)
	return json.Valid(around) && (len(e.managedFields) == 0 || json.Valid(e.managedFields))
}

// cutManagedFields splits obj around the value of metadata.managedFields.
func (sc *scan) cutManagedFields(obj []byte) (head, managedFields, tail []byte, ok bool) {
	var buf [32]member
	meta, found, ok := sc.objectField(buf[:0], obj, "metadata")
	if !ok || !found {
		return obj, nil, nil, ok
	}
	// A metadata that is null or not an object: the full decode decides.
	mf, found, ok := sc.objectField(buf[:0], meta, "managedFields")
	if !ok || !found {
		return obj, nil, nil, ok
	}
	start := cap(obj) - cap(mf)
	return obj[:start], mf, obj[start+len(mf):], true
}

// objectField returns member name of the JSON object obj, as encoding/json
// would decode it. ok is false when obj is not an object or has a member
// named like name but for case.
func (sc *scan) objectField(buf []member, obj []byte, name string) (value []byte, found, ok bool) {
	ms, ok := sc.members(buf, obj)
	if !ok || !exactNames(ms, name) {
		return nil, false, false
	}
	value, found = field(ms, name)
	return value, found, true
}

// scan reads the members of the objects in one JSON text. It finds where
// every object and array ends in one pass first, so that reading an
// envelope three objects deep does not scan the pod once per level.
type scan struct {
	text []byte
	// ends[i] is the index just past the object or array opened at
	// text[i]; only those indices are set.
	ends []int32
}

var scanEnds = sync.Pool{New: func() any { return new([]int32) }}

// newScan indexes text; false when its brackets do not balance.
func newScan(text []byte) (*scan, bool) {
	if len(text) > math.MaxInt32 {
		return nil, false
	}
	ends := scanEnds.Get().(*[]int32)
	*ends = slices.Grow((*ends)[:0], len(text))[:len(text)]
	sc := &scan{text: text, ends: *ends}
	var stackBuf [32]int32
	stack := stackBuf[:0]
	for i := 0; i < len(text); i++ {
		switch c := text[i]; c {
		case '"':
			end, err := skipValue(text, i)
			if err != nil {
				sc.release()
				return nil, false
			}
			i = end - 1
		case '{', '[':
			stack = append(stack, int32(i))
		case '}', ']':
			if len(stack) == 0 {
				sc.release()
				return nil, false
			}
			open := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if text[open] != c-2 { // '{'+2 == '}', '['+2 == ']'
				sc.release()
				return nil, false
			}
			sc.ends[open] = int32(i + 1)
		}
	}
	if len(stack) != 0 {
		sc.release()
		return nil, false
	}
	return sc, true
}

func (sc *scan) release() {
	ends := sc.ends[:0]
	sc.ends = nil
	scanEnds.Put(&ends)
}

// members returns the members of obj, a slice of the scanned text, or false
// when obj is not an object. Keys are unquoted; values are slices of the
// text.
func (sc *scan) members(dst []member, obj []byte) ([]member, bool) {
	if len(obj) == 0 || obj[0] != '{' {
		return nil, false
	}
	start := cap(sc.text) - cap(obj)
	end := int(sc.ends[start]) // just past the closing brace
	ms, err := appendIndexedMembers(dst, sc.text[start:end], sc.ends, start)
	return ms, err == nil
}

// field returns the value of the last member named name, the one
// encoding/json would decode, and whether there is one.
func field(ms []member, name string) (value []byte, found bool) {
	for _, m := range ms {
		if string(m.key) == name {
			value, found = m.value, true
		}
	}
	return value, found
}

// exactNames reports whether no member is named like one of names but for
// case: encoding/json would take it for that name, peekReview would not.
func exactNames(ms []member, names ...string) bool {
	for _, m := range ms {
		for _, n := range names {
			if string(m.key) != n && strings.EqualFold(string(m.key), n) {
				return false
			}
		}
	}
	return true
}

// stringField returns the string member name: "" when absent or null, and
// false when it is not a plain string.
func stringField(ms []member, name string) (string, bool) {
	v, found := field(ms, name)
	if !found || string(v) == "null" {
		return "", true
	}
	if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 || !utf8.Valid(v) {
		return "", false
	}
	return string(v[1 : len(v)-1]), true
}

// isString reports whether member name is the string want, written plainly.
func isString(ms []member, name, want string) bool {
	v, ok := field(ms, name)
	return ok && len(v) == len(want)+2 && v[0] == '"' && string(v[1:len(v)-1]) == want
}

// hash is env's key hashed, once per review.
func (c *ReviewCache) hash(env *envelope) uint64 {
	if env.hashed {
		return env.hash
	}
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(env.namespace)
	h.WriteByte(0)
	// The cut's position is part of the key: another object could join
	// to the same bytes around a managedFields elsewhere.
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(env.head)))
	h.Write(n[:])
	h.Write(env.head)
	h.Write(env.tail)
	env.hash, env.hashed = h.Sum64(), true
	return env.hash
}

// get returns the answer to env's pod, if the cache holds it.
func (c *ReviewCache) get(env *envelope) *cachedAnswer {
	sum := c.hash(env)
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[sum]
	if !ok {
		return nil
	}
	e := el.Value.(*cachedAnswer)
	if e.namespace != env.namespace || e.headLen != len(env.head) || len(e.object) != env.objectLen() ||
		!bytes.Equal(e.object[:len(env.head)], env.head) || !bytes.Equal(e.object[len(env.head):], env.tail) {
		return nil
	}
	c.lru.MoveToFront(el)
	return e
}

// put records the answer to env's pod, made with sa (looked up as
// e.saNamespace/e.saName).
func (c *ReviewCache) put(env *envelope, sa *corev1.ServiceAccount, e *cachedAnswer) {
	if env.objectLen() > maxCachedObjectBytes || sa.ResourceVersion == "" {
		// Without a resourceVersion a changed ServiceAccount could not be told apart.
		return
	}
	e.namespace = env.namespace
	e.object = make([]byte, 0, env.objectLen())
	e.object = append(append(e.object, env.head...), env.tail...)
	e.headLen = len(env.head)
	e.saUID, e.saResourceVersion = sa.UID, sa.ResourceVersion
	e.hash = c.hash(env)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[e.hash]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.byKey[e.hash] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		old := c.lru.Remove(c.lru.Back()).(*cachedAnswer)
		delete(c.byKey, old.hash)
	}
}

// Len is how many answers the cache holds.
func (c *ReviewCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
