//! Doubly linked lists threaded through slab indices.
//!
//! A node lives in one `Vec` slot for its whole life and takes part in two
//! lists at once (read order and insertion order), so the links are `u32`
//! indices stored in the node, not pointers: no allocation per operation,
//! no `unsafe`, and every operation below is O(1).

/// The "no node" index.
pub const NIL: u32 = u32::MAX;

/// One node's position in one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Links {
    prev: u32,
    next: u32,
}

impl Links {
    pub const UNLINKED: Links = Links { prev: NIL, next: NIL };
}

/// Picks which of a node's `Links` a list uses.
pub type Select<N> = fn(&mut N) -> &mut Links;

/// Head and tail of one list; the nodes hold the rest.
#[derive(Clone, Copy, Debug)]
pub struct List {
    head: u32,
    tail: u32,
}

impl Default for List {
    fn default() -> Self {
        List { head: NIL, tail: NIL }
    }
}

impl List {
    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Appends node `i`, which must not be in this list.
    pub fn push_back<N>(&mut self, nodes: &mut [N], i: u32, sel: Select<N>) {
        let old_tail = self.tail;
        *sel(&mut nodes[i as usize]) = Links {
            prev: old_tail,
            next: NIL,
        };
        if old_tail == NIL {
            self.head = i;
        } else {
            sel(&mut nodes[old_tail as usize]).next = i;
        }
        self.tail = i;
    }

    /// Takes node `i`, which must be in this list, out of it.
    pub fn unlink<N>(&mut self, nodes: &mut [N], i: u32, sel: Select<N>) {
        let Links { prev, next } = *sel(&mut nodes[i as usize]);
        if prev == NIL {
            self.head = next;
        } else {
            sel(&mut nodes[prev as usize]).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            sel(&mut nodes[next as usize]).prev = prev;
        }
        *sel(&mut nodes[i as usize]) = Links::UNLINKED;
    }

    pub fn move_to_back<N>(&mut self, nodes: &mut [N], i: u32, sel: Select<N>) {
        if self.tail != i {
            self.unlink(nodes, i, sel);
            self.push_back(nodes, i, sel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node(Links);
    fn sel(n: &mut Node) -> &mut Links {
        &mut n.0
    }

    fn order(list: &List, nodes: &mut [Node]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = list.head;
        while i != NIL {
            out.push(i);
            i = sel(&mut nodes[i as usize]).next;
        }
        out
    }

    #[test]
    fn push_unlink_move() {
        let mut nodes: Vec<Node> = (0..4).map(|_| Node(Links::UNLINKED)).collect();
        let mut list = List::default();
        for i in 0..4 {
            list.push_back(&mut nodes, i, sel);
        }
        assert_eq!(order(&list, &mut nodes), [0, 1, 2, 3]);
        list.move_to_back(&mut nodes, 1, sel);
        assert_eq!(order(&list, &mut nodes), [0, 2, 3, 1]);
        list.unlink(&mut nodes, 0, sel);
        list.unlink(&mut nodes, 1, sel);
        assert_eq!(order(&list, &mut nodes), [2, 3]);
        assert_eq!(list.front(), Some(2));
        list.unlink(&mut nodes, 2, sel);
        list.unlink(&mut nodes, 3, sel);
        assert_eq!(list.front(), None);
    }
}
