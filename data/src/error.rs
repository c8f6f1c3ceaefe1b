//! One error type for every data source. Each variant that comes from a file names it, so a
//! hospital operator can find the bad file among thousands.

use std::path::PathBuf;

/// Everything that can go wrong reading a dataset. Untrusted bytes end here, never in a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The `--data` string could not be parsed.
    #[error("bad data spec {spec:?}: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or folder could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `.npz` archive or an `.npy` member inside it is malformed.
    #[error("{}: not a readable .npz ({what})", path.display())]
    Npz {
        /// The archive.
        path: PathBuf,
        /// What failed.
        what: String,
    },
    /// A required array is absent from a `.npz`.
    #[error("{}: array {key:?} is missing", path.display())]
    MissingArray {
        /// The archive.
        path: PathBuf,
        /// The array name, e.g. `train_images`.
        key: String,
    },
    /// An array has the wrong shape.
    #[error("{}: array {key:?} has shape {got:?}, expected {expected}", path.display())]
    Shape {
        /// The archive.
        path: PathBuf,
        /// The array name.
        key: String,
        /// The shape that would be accepted.
        expected: String,
        /// The shape found.
        got: Vec<u64>,
    },
    /// An array has the wrong element type.
    #[error("{}: array {key:?} has dtype {got}, expected {expected}", path.display())]
    Dtype {
        /// The archive.
        path: PathBuf,
        /// The array name.
        key: String,
        /// The accepted dtype(s).
        expected: String,
        /// The dtype found (numpy descr).
        got: String,
    },
    /// A label does not name a class of its department.
    #[error("{}: {what} label {label} at index {index} is out of range 0..{classes}", path.display())]
    LabelOutOfRange {
        /// The file holding the label (or the folder).
        path: PathBuf,
        /// Which labels (e.g. `train_labels`).
        what: String,
        /// Row of the label.
        index: usize,
        /// The value found.
        label: i64,
        /// Number of classes of the department.
        classes: usize,
    },
    /// A val/test class folder that train does not have.
    #[error("{}: class {class:?} of department {department:?} has no train/ folder", path.display())]
    UnknownClass {
        /// The class folder.
        path: PathBuf,
        /// Department name.
        department: String,
        /// Class name.
        class: String,
    },
    /// Images and labels disagree in count.
    #[error("{}: {images_key} has {images} rows but {labels_key} has {labels}", path.display())]
    LengthMismatch {
        /// The archive.
        path: PathBuf,
        /// Image array name.
        images_key: String,
        /// Number of images.
        images: usize,
        /// Label array name.
        labels_key: String,
        /// Number of labels.
        labels: usize,
    },
    /// A department (or one of its classes) has no training images.
    #[error("{}: {what}", path.display())]
    Empty {
        /// The department file or folder.
        path: PathBuf,
        /// What is empty.
        what: String,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A loader worker thread died (a bug, reported instead of hanging).
    #[error("data loader worker stopped unexpectedly")]
    Worker,
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn spec(spec: &str, reason: impl Into<String>) -> Self {
        DataError::Spec {
            spec: spec.to_string(),
            reason: reason.into(),
        }
    }
}
