//! Call sites: where a borrow was taken (a Rust `#[track_caller]` location or a C
//! `__FILE__`/`__LINE__`/`__func__`), and the three-word cell a slot records it in,
//! written by the borrower and read back, seqlock-style, by leak scans.

use std::ffi::{CStr, c_char};
use std::fmt;
use std::panic::Location;
use std::ptr::NonNull;

use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// Where a borrow was taken: a Rust `#[track_caller]` location or a C call site passed
/// by `HELIOSDB_POOL_ACQUIRE` (`__FILE__`, `__LINE__`, `__func__`).
///
/// Copying a call site copies pointers only; the strings are `'static`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CallSite {
    /// A Rust call site, recorded through `#[track_caller]`.
    Rust(&'static Location<'static>),
    /// A C call site.
    C(CSite),
}

/// A C call site: pointers to the C compiler's static strings, kept as pointers so
/// recording one costs no `strlen`; the strings are read only when reported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CSite {
    file: NonNull<c_char>,
    line: u32,
    function: Option<NonNull<c_char>>,
}

// SAFETY: the pointers name immutable, NUL-terminated strings that live for the whole
// program (`CSite::new`'s contract), so sharing or sending them is sharing `&'static CStr`.
unsafe impl Send for CSite {}
// SAFETY: as above.
unsafe impl Sync for CSite {}

impl CSite {
    /// A C call site; `None` if `file` is NULL. `function` may be NULL.
    ///
    /// # Safety
    ///
    /// `file` and a non-NULL `function` are NUL-terminated strings that are never
    /// modified or freed while the program runs (`__FILE__` and `__func__` are).
    pub unsafe fn new(file: *const c_char, line: u32, function: *const c_char) -> Option<Self> {
        Some(CSite {
            file: NonNull::new(file.cast_mut())?,
            line,
            function: NonNull::new(function.cast_mut()),
        })
    }

    /// A C call site from Rust string constants.
    pub const fn from_static(
        file: &'static CStr,
        line: u32,
        function: Option<&'static CStr>,
    ) -> Self {
        CSite {
            // SAFETY: a `CStr`'s pointer is never NULL.
            file: unsafe { NonNull::new_unchecked(file.as_ptr().cast_mut()) },
            line,
            function: match function {
                // SAFETY: as above.
                Some(f) => Some(unsafe { NonNull::new_unchecked(f.as_ptr().cast_mut()) }),
                None => None,
            },
        }
    }

    /// `__FILE__`.
    pub fn file(&self) -> &'static CStr {
        // SAFETY: a static, NUL-terminated string by `new`'s contract.
        unsafe { CStr::from_ptr(self.file.as_ptr()) }
    }

    /// `__LINE__`.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// `__func__`, when given.
    pub fn function(&self) -> Option<&'static CStr> {
        // SAFETY: as in `file`.
        self.function.map(|f| unsafe { CStr::from_ptr(f.as_ptr()) })
    }
}

impl CallSite {
    /// The source file.
    pub fn file(&self) -> std::borrow::Cow<'static, str> {
        match self {
            CallSite::Rust(loc) => loc.file().into(),
            CallSite::C(site) => site.file().to_string_lossy(),
        }
    }

    /// The line number.
    pub fn line(&self) -> u32 {
        match self {
            CallSite::Rust(loc) => loc.line(),
            CallSite::C(site) => site.line(),
        }
    }

    /// The enclosing function, known for C call sites only.
    pub fn function(&self) -> Option<std::borrow::Cow<'static, str>> {
        match self {
            CallSite::Rust(_) => None,
            CallSite::C(site) => site.function().map(CStr::to_string_lossy),
        }
    }
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file(), self.line())?;
        if let Some(func) = self.function() {
            write!(f, " ({func})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A call site packed into three words so recording it is three relaxed stores.
///
/// `aux` = line << 1 | is_c. `ptr` is the `Location` (Rust) or the file string (C);
/// `func` the C function string or 0.
pub(crate) struct SiteCell {
    ptr: AtomicUsize,
    aux: AtomicU64,
    func: AtomicUsize,
}

impl SiteCell {
    pub(crate) fn new() -> Self {
        SiteCell {
            ptr: AtomicUsize::new(0),
            aux: AtomicU64::new(0),
            func: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(crate) fn store(&self, site: CallSite) {
        let (ptr, aux, func) = match site {
            CallSite::Rust(loc) => (loc as *const Location<'static> as usize, 0, 0),
            CallSite::C(site) => (
                site.file.as_ptr() as usize,
                (u64::from(site.line) << 1) | 1,
                site.function.map_or(0, |f| f.as_ptr() as usize),
            ),
        };
        self.ptr.store(ptr, Ordering::Relaxed);
        self.aux.store(aux, Ordering::Relaxed);
        self.func.store(func, Ordering::Relaxed);
    }

    /// The three words as they are now. They may mix two `store`s while a borrower
    /// writes concurrently, so they stay raw words until the caller has validated them
    /// ([`SiteWords::decode`]); no reference is built from an unvalidated pointer.
    #[inline]
    pub(crate) fn load_words(&self) -> SiteWords {
        SiteWords {
            ptr: self.ptr.load(Ordering::Relaxed),
            aux: self.aux.load(Ordering::Relaxed),
            func: self.func.load(Ordering::Relaxed),
        }
    }
}

/// A call site's three words, read but not yet known to belong to one `store`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiteWords {
    ptr: usize,
    aux: u64,
    func: usize,
}

impl SiteWords {
    /// The call site these words encode.
    ///
    /// # Safety
    ///
    /// All three words were written by one [`SiteCell::store`]: the reader owns the slot,
    /// or it validated the read against the slot's state (seqlock-style) afterwards.
    pub(crate) unsafe fn decode(self) -> Option<CallSite> {
        let SiteWords { ptr, aux, func } = self;
        if ptr == 0 {
            return None;
        }
        if aux & 1 == 0 {
            // SAFETY: a Rust site stores a `&'static Location` (see `store`), and the
            // caller guarantees that all three words belong to one `store`.
            Some(CallSite::Rust(unsafe {
                &*(ptr as *const Location<'static>)
            }))
        } else {
            // SAFETY: C sites store the pointers of a `CSite`, whose constructor's
            // contract makes them static, NUL-terminated strings; `func` is 0 when absent.
            let site = unsafe {
                CSite::new(
                    ptr as *const c_char,
                    (aux >> 1) as u32,
                    func as *const c_char,
                )
            };
            site.map(CallSite::C)
        }
    }
}
